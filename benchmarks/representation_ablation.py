"""Ablation of Digi-Q's stage 1: critic quality with features from the actionability-fine-tuned VLM
vs the untouched VLM (the paper's "w/o representation fine-tuning" row), on the same data and seeds.

1. Simulator transitions (noisy expert, AitW General suite), split by episode into train and test;
   the test states get random alternative actions for the ranking metric.
2. The VLM (a saved model with ``--base_model``, else a tiny random-init Qwen2-VL) is fine-tuned
   on the actionability task of the *train* transitions (``train_representation``; its own
   held-out episodes give the Yes/No accuracy) and saved merged.
3. For both VLMs, loaded back with ``VLMFeatureExtractor.from_pretrained`` (the path a user takes):
   features are cached and a Digi-Q critic (TD, double Q/V) is trained with each of ``--critic_seeds``
   and evaluated on the test episodes: AUROC of V(s_0) for trajectory success, ranking accuracy of
   the logged action against random alternatives (successful trajectories), MSE of V against the MC
   return. Means (and standard deviations over the critic seeds) are printed side by side.

A random-init VLM has a near-zero, frozen output layer that LoRA cannot sharpen, so the default is
full fine-tuning; pass ``--use_peft`` with a trained ``--base_model`` (e.g. the behavior-cloned
actor of ``examples/train_base_actor.py``). About 7 minutes on two busy CPU cores with the defaults.
Ends with one JSON line: ``{"benchmark": "representation_ablation", "ours": <fine-tuned ranking
accuracy>, "baseline": <untouched ranking accuracy>, "unit": "ranking_accuracy", "ratio": ...,
"fine_tuned": {...}, "untouched": {...}, "actionability": {...}}``. The headline is the ranking
accuracy, the metric about actions, which the actionability task is meant to sharpen; the AUROC
of V(s_0) stayed below or near chance for every feature setting we tried on this data (the first
screen is always the home screen, and success is mostly decided by the noisy policy's later steps).

Usage: ``python benchmarks/representation_ablation.py [--num_episodes 120] [--base_model PATH]``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict

from digiq_trl.data import split_by_episode
from digiq_trl.envs import NoisyExpertPolicy, collect_transitions
from digiq_trl.envs.policies import add_random_alternatives
from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
from digiq_trl.models.feature_cache import cache_features
from digiq_trl.models.features import VLMFeatureExtractor
from digiq_trl.pipeline_config import ALT_ACTIONS_COLUMN
from digiq_trl.trainers.critic_config import DigiQCriticConfig
from digiq_trl.trainers.critic_trainer import DigiQCriticTrainer
from digiq_trl.trainers.representation_config import RepresentationConfig
from digiq_trl.trainers.representation_trainer import train_representation


CRITIC_METRICS = ("eval_v0_auroc", "eval_ranking_accuracy", "eval_v_mc_mse")
"""Critic-quality metrics compared (``DigiQCriticTrainer.evaluate``)."""


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_episodes", type=int, default=150, help="Simulated episodes (noisy expert).")
    parser.add_argument("--test_fraction", type=float, default=0.3, help="Episodes held out for the critic.")
    parser.add_argument("--alternatives", type=int, default=4, help="Random alternatives per test state.")
    parser.add_argument("--base_model", default=None, help="Saved VLM to start from (default: tiny random Qwen2-VL).")
    parser.add_argument("--use_peft", action="store_true", help="LoRA instead of full fine-tuning.")
    parser.add_argument("--representation_steps", type=int, default=120)
    parser.add_argument("--representation_learning_rate", type=float, default=1e-3)
    parser.add_argument("--critic_steps", type=int, default=800)
    parser.add_argument("--critic_learning_rate", type=float, default=1e-3)
    parser.add_argument("--critic_hidden_size", type=int, default=256)
    parser.add_argument("--critic_seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0, help="Seed of data, split and fine-tuning.")
    parser.add_argument("--output_dir", default="outputs/representation_ablation")
    return parser.parse_args()


def make_data(args: argparse.Namespace) -> DatasetDict:
    """Train/test transitions by episode; test states carry random alternatives."""
    transitions = collect_transitions(
        "digiq_trl/Phone-general-v0", NoisyExpertPolicy(seed=args.seed), args.num_episodes, seed=args.seed
    )
    splits = split_by_episode(transitions, args.test_fraction, seed=args.seed)
    splits["test"] = add_random_alternatives(splits["test"], args.alternatives, args.seed)
    return splits


def save_base(args: argparse.Namespace, out: Path) -> str:
    """The untouched VLM's directory (the tiny random model is saved so both load the same way)."""
    if args.base_model is not None:
        return args.base_model
    from digiq_trl.models.tiny import tiny_qwen2_vl

    model, processor = tiny_qwen2_vl(seed=args.seed)
    model.save_pretrained(out / "untouched")
    processor.save_pretrained(out / "untouched")
    return str(out / "untouched")


def fine_tune(base: str, train: Dataset, args: argparse.Namespace, out: Path) -> tuple[str, dict[str, float]]:
    """Actionability fine-tuning of ``base`` on the train transitions; returns its directory and metrics."""
    config = RepresentationConfig(
        output_dir=str(out / "fine_tuned"), max_steps=args.representation_steps,
        learning_rate=args.representation_learning_rate, lr_scheduler_type="cosine",
        per_device_train_batch_size=16, per_device_eval_batch_size=32, use_peft=args.use_peft,
        use_cpu=not torch.cuda.is_available(), bf16=False, report_to=[], save_strategy="no",
        logging_steps=max(1, args.representation_steps // 5), disable_tqdm=True, seed=args.seed,
    )
    metrics = train_representation(base, None, train, config)
    return config.output_dir, metrics


def critic_quality(extractor: VLMFeatureExtractor, data: DatasetDict, args: argparse.Namespace,
                   seed: int, out: Path) -> dict[str, float]:
    """Train one critic on the extractor's (cached) features and return its evaluation metrics."""
    dim = extractor.hidden_size
    torch.manual_seed(seed)
    critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=dim, v_input_dim=dim, hidden_size=args.critic_hidden_size))
    config = DigiQCriticConfig(
        output_dir=str(out), max_steps=args.critic_steps, learning_rate=args.critic_learning_rate,
        per_device_train_batch_size=64, gradient_accumulation_steps=1, per_device_eval_batch_size=256,
        max_grad_norm=1.0, alt_actions_column=ALT_ACTIONS_COLUMN, logging_steps=max(1, args.critic_steps // 5),
        save_strategy="no", report_to=[], seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    trainer = DigiQCriticTrainer(critic, config, train_dataset=data["train"], eval_dataset=data["test"])
    trainer.train()
    return trainer.evaluate()


def evaluate_backbone(path: str, data: DatasetDict, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Critic metrics (mean and sd over the critic seeds) with features of the VLM saved at ``path``."""
    extractor = VLMFeatureExtractor.from_pretrained(path, dtype=torch.float32)
    featurized = DatasetDict(
        train=cache_features(data["train"], extractor, cache_dir=str(out / "cache")),
        test=cache_features(data["test"], extractor, alt_actions_column=ALT_ACTIONS_COLUMN,
                            cache_dir=str(out / "cache")),
    )
    runs = [critic_quality(extractor, featurized, args, seed, out / f"critic-{seed}") for seed in args.critic_seeds]
    summary: dict[str, Any] = {}
    for key in CRITIC_METRICS:
        values = [run[key] for run in runs]
        name = key.removeprefix("eval_")
        summary[name] = statistics.fmean(values)
        summary[f"{name}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def print_table(untouched: dict[str, Any], fine_tuned: dict[str, Any], seeds: int) -> None:
    """The side-by-side table (mean +- sd over the critic seeds)."""
    print(f"\ncritic quality on held-out episodes (mean +- sd over {seeds} critic seeds)")
    print(f"{'metric':<20}{'untouched VLM':>20}{'fine-tuned VLM':>20}")
    for key in (m.removeprefix("eval_") for m in CRITIC_METRICS):
        cells = [f"{row[key]:.3f} +- {row[key + '_sd']:.3f}" for row in (untouched, fine_tuned)]
        print(f"{key:<20}{cells[0]:>20}{cells[1]:>20}")


def main() -> None:
    """Run the ablation and print the table and the JSON line."""
    args = parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    out = Path(args.output_dir)
    data = make_data(args)
    base = save_base(args, out)
    fine_tuned_path, actionability = fine_tune(base, data["train"], args, out)
    untouched = evaluate_backbone(base, data, args, out / "untouched-features")
    fine_tuned = evaluate_backbone(fine_tuned_path, data, args, out / "fine-tuned-features")
    held_out = {k.removeprefix("eval_"): v for k, v in actionability.items()
                if k.startswith("eval_") and ("yes_no" in k or "majority" in k)}
    print(f"\nactionability (held-out episodes of the train split): {json.dumps(held_out)}")
    print_table(untouched, fine_tuned, len(args.critic_seeds))
    ours, baseline = fine_tuned["ranking_accuracy"], untouched["ranking_accuracy"]
    print(json.dumps({
        "benchmark": "representation_ablation", "ours": ours, "baseline": baseline, "unit": "ranking_accuracy",
        "ratio": ours / baseline if baseline else None, "fine_tuned": fine_tuned, "untouched": untouched,
        "actionability": held_out,
        "data": {"train_transitions": len(data["train"]), "test_transitions": len(data["test"])},
        "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
