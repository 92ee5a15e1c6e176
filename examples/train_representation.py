"""Digi-Q stage 1: fine-tune a VLM on the actionability task ("will this action change the screen?").

With no arguments it runs offline on a CPU: transitions from the simulated phone (noisy expert),
a tiny random-init Qwen2-VL (fully fine-tuned, see ``examples/configs/representation_tiny.yaml``),
and prints held-out Yes/No accuracy next to the majority-class rate. Every ``RepresentationConfig``
(``SFTConfig``) field is a flag, and a YAML file works too::

    python examples/train_representation.py                                  # embedded default
    python examples/train_representation.py --config examples/configs/representation_tiny.yaml
    python examples/train_representation.py --model_name_or_path Qwen/Qwen2-VL-2B-Instruct \\
        --dataset_name user/aitw-general-transitions --output_dir qwen2vl-actionability \\
        --merge_adapter false --push_to_hub true

The output directory then holds the merged model (or the LoRA adapter with ``--merge_adapter
false``), the processor and a model card; ``VLMFeatureExtractor.from_pretrained(output_dir)`` (or
``(base, adapter=output_dir)``) loads it for stage 2.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from trl import TrlParser

from digiq_trl.trainers.representation_config import RepresentationConfig
from digiq_trl.trainers.representation_trainer import train_representation

EMBEDDED_DEFAULT = ["--config", str(Path(__file__).parent / "configs" / "representation_tiny.yaml")]
"""The no-argument run: small, CPU, offline (a few minutes on two cores)."""


@dataclass
class RepresentationScriptArguments:
    """Where the model and the transitions come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "VLM Hub id or path (AutoModelForImageTextToText); default: a tiny random Qwen2-VL."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Transitions: a save_to_disk folder or Hub id; default: collect them in the simulator."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_name` to train on."})
    env_id: str = field(
        default="digiq_trl/Phone-general-v0", metadata={"help": "Simulator task suite when no dataset is given."}
    )
    num_episodes: int = field(default=200, metadata={"help": "Simulated episodes to collect."})
    policy_noise: float | None = field(
        default=None, metadata={"help": "Random-action rate of the noisy expert (default: the library's)."}
    )


def load_data(script_args: RepresentationScriptArguments, seed: int) -> Dataset:
    """The transitions: from disk / the Hub when named, else collected in the simulator."""
    if script_args.dataset_name is not None:
        from digiq_trl.data.hub import load_transitions

        return load_transitions(script_args.dataset_name, split=script_args.dataset_split)
    from digiq_trl.envs import NoisyExpertPolicy, collect_transitions

    noise = {} if script_args.policy_noise is None else {"noise": script_args.policy_noise}
    policy = NoisyExpertPolicy(seed=seed, **noise)
    return collect_transitions(script_args.env_id, policy, num_episodes=script_args.num_episodes, seed=seed)


def load_model(script_args: RepresentationScriptArguments):
    """The VLM and its processor (a tiny offline Qwen2-VL when no model is named)."""
    if script_args.model_name_or_path is None:
        from digiq_trl.testing import tiny_qwen2_vl

        return tiny_qwen2_vl()
    return script_args.model_name_or_path, None


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Parse flags (or use the embedded default), train, print the metrics as one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    parser = TrlParser((RepresentationScriptArguments, RepresentationConfig))
    script_args, args = parser.parse_args_and_config(argv or EMBEDDED_DEFAULT)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    transitions = load_data(script_args, args.seed)
    model, processor = load_model(script_args)
    metrics = train_representation(model, processor, transitions, args)
    print(json.dumps({"stage": "representation", "output_dir": args.output_dir, **metrics}))
    return metrics


if __name__ == "__main__":
    main()
