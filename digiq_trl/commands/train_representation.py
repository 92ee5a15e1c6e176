"""``digiq-trl train-representation``: Digi-Q stage 1, fine-tune a VLM on the actionability task
("will this action change the screen?").

With no arguments it runs offline on a CPU (:data:`EMBEDDED_DEFAULT`, the settings of
``examples/configs/representation_tiny.yaml``): transitions from the simulated phone (noisy expert),
a tiny random-init Qwen2-VL, fully fine-tuned, and prints held-out Yes/No accuracy next to the
majority-class rate. Every ``RepresentationConfig`` (``SFTConfig``) field is a flag, and a YAML
file works too::

    digiq-trl train-representation                                        # embedded default
    digiq-trl train-representation --config examples/configs/representation_tiny.yaml
    digiq-trl train-representation --model_name_or_path Qwen/Qwen2-VL-2B-Instruct \\
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trl import TrlParser

from ..trainers.representation_config import RepresentationConfig
from . import parse_options


if TYPE_CHECKING:
    from datasets import Dataset

DESCRIPTION = ("Digi-Q stage 1: fine-tune a VLM on the actionability task (will this action change the screen?). "
               "With no arguments: simulator data and a tiny random Qwen2-VL, offline on CPU.")

EMBEDDED_DEFAULT: dict[str, Any] = {
    "model_name_or_path": None,
    "env_id": "digiq_trl/Phone-general-v0",
    "num_episodes": 200,
    "output_dir": "outputs/representation-tiny",
    "use_peft": False,
    "learning_rate": 1.0e-3,
    "lr_scheduler_type": "cosine",
    "max_steps": 150,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "change_threshold": 30.0,
    "balance": False,
    "eval_fraction": 0.2,
    "merge_adapter": True,
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 25,
    "seed": 0,
}
"""The no-argument run: small, CPU, offline (a few minutes on two cores). A random-init VLM needs full
fine-tuning (LoRA cannot sharpen its frozen output layer)."""


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
        from ..data.hub import load_transitions

        return load_transitions(script_args.dataset_name, split=script_args.dataset_split)
    from ..envs import NoisyExpertPolicy, collect_transitions

    noise = {} if script_args.policy_noise is None else {"noise": script_args.policy_noise}
    policy = NoisyExpertPolicy(seed=seed, **noise)
    return collect_transitions(script_args.env_id, policy, num_episodes=script_args.num_episodes, seed=seed)


def load_model(script_args: RepresentationScriptArguments) -> tuple[Any, Any]:
    """The VLM and its processor (a tiny offline Qwen2-VL when no model is named; else the name and
    ``None``, which :func:`~digiq_trl.trainers.train_representation` loads)."""
    if script_args.model_name_or_path is None:
        from ..models.tiny import tiny_qwen2_vl

        return tiny_qwen2_vl()
    return script_args.model_name_or_path, None


def make_parser(prog: str | None = None) -> TrlParser:
    """The command's parser: :class:`RepresentationScriptArguments` and every ``RepresentationConfig`` field."""
    return TrlParser((RepresentationScriptArguments, RepresentationConfig), prog=prog, description=DESCRIPTION)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> dict[str, float]:
    """Parse flags (with none, use :data:`EMBEDDED_DEFAULT`), train, print the metrics as one JSON line."""
    from ..trainers.representation_trainer import train_representation

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(prog)
    if not argv:
        parser.set_defaults_with_config(**EMBEDDED_DEFAULT)
    script_args, args = parse_options(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    transitions = load_data(script_args, args.seed)
    model, processor = load_model(script_args)
    metrics = train_representation(model, processor, transitions, args)
    print(json.dumps({"stage": "representation", "output_dir": args.output_dir, **metrics}))
    return metrics
