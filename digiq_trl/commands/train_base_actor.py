"""``digiq-trl train-base-actor``: behavior-clone a tiny VLM base actor in the simulated phone, and
measure it.

The embedded default's base actor (the role AutoUI plays in the Digi-Q paper): a random-init tiny
Qwen2-VL trained on noisy-expert states labelled with the expert's actions. The command reports the
share of valid action strings and the greedy success rate, and checks that Best-of-N sampling gives
diverse candidates (some of which beat the greedy action), then saves the actor::

    digiq-trl train-base-actor --output_dir outputs/base-actor
    digiq-trl train-base-actor --config examples/configs/base_actor.yaml   # the pipeline's settings
    python examples/train_base_actor.py --config examples/configs/base_actor.yaml
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from trl import TrlParser

from ..actions import actions_match, parse_action, try_parse_action
from ..envs import ExpertPolicy


if TYPE_CHECKING:
    from ..models.policy import VLMPolicy

DESCRIPTION = ("Behavior-clone a tiny Qwen2-VL base actor on noisy-expert states in the simulated phone; report "
               "valid-action share, greedy success and Best-of-N diversity; save the actor and results.json.")


@dataclass
class BaseActorArguments:
    """Options of the base-actor run."""

    output_dir: str = field(default="outputs/base-actor", metadata={"help": "Where the actor and results.json go."})
    suite: str = field(default="general", metadata={"help": "Task suite: general or webshop."})
    demo_episodes: int = field(default=2000, metadata={"help": "Noisy-expert episodes to collect (train split)."})
    vocab_size: int = field(default=600, metadata={"help": "Tiny tokenizer vocabulary size."})
    hidden_size: int = field(default=128, metadata={"help": "Tiny Qwen2-VL hidden size."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Tiny Qwen2-VL decoder layers."})
    num_attention_heads: int = field(default=2, metadata={"help": "Tiny Qwen2-VL attention heads."})
    noise: float = field(default=0.15, metadata={"help": "Random-action probability while collecting."})
    max_steps: int = field(default=600, metadata={"help": "Behavior-cloning optimizer steps."})
    batch_size: int = field(default=32, metadata={"help": "Behavior-cloning batch size."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine schedule)."})
    eval_episodes: int = field(default=200, metadata={"help": "Greedy evaluation episodes (0 to skip)."})
    eval_split: str = field(default="test", metadata={"help": "Goal split for evaluation: train, test or heldout."})
    eval_seed: int = field(default=1234, metadata={"help": "Seed of the evaluation episodes."})
    best_of_n: int = field(default=16, metadata={"help": "Candidates per state in the diversity check (0 to skip)."})
    best_of_n_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the candidates."})
    best_of_n_episodes: int = field(default=50, metadata={"help": "Expert episodes whose states are sampled."})
    seed: int = field(default=0, metadata={"help": "Seed of collection, initialization and training."})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads."})


class ValidityCountingPolicy:
    """Wraps a policy and counts how many of its action strings parse as valid AutoUI actions."""

    def __init__(self, policy: VLMPolicy) -> None:
        self.policy = policy
        self.total = 0
        self.valid = 0

    def act(self, observations: Sequence[dict[str, Any]], infos: Sequence[dict[str, Any]]) -> list[str]:
        """The wrapped policy's actions, counted."""
        actions = self.policy.act(observations, infos)
        self.total += len(actions)
        self.valid += sum(try_parse_action(a) is not None for a in actions)
        return actions


def best_of_n_diversity(policy: VLMPolicy, args: BaseActorArguments) -> dict[str, float]:
    """Sample candidates on expert-visited test states; how diverse, and how often one beats greedy."""
    from ..envs.collect import run_episodes

    env_id = f"digiq_trl/Phone-{args.suite}-v0"
    steps = list(run_episodes(env_id, ExpertPolicy(), args.best_of_n_episodes, seed=args.eval_seed + 1,
                              split=args.eval_split))
    observations = [s.observation for s in steps]
    greedy = policy.act(observations)
    samples = policy.sample(observations, args.best_of_n, args.best_of_n_temperature)
    rescued = distinct = valid = 0
    for step, g, cands in zip(steps, greedy, samples):
        gold, boxes = parse_action(step.info["expert_action"]), step.info["ui_boxes"]
        distinct += len(set(cands))
        valid += sum(try_parse_action(c) is not None for c in cands)
        if not actions_match(try_parse_action(g), gold, boxes):
            rescued += any(actions_match(try_parse_action(c), gold, boxes) for c in cands)
    n = len(steps)
    return {
        "states": n,
        "mean_distinct_candidates": distinct / n,
        "valid_candidate_fraction": valid / (n * args.best_of_n),
        "greedy_wrong_some_candidate_right": rescued / n,
    }


def train_base_actor(args: BaseActorArguments) -> dict[str, Any]:
    """Collect, clone, evaluate, save; returns (and writes) the measured figures."""
    import torch

    from ..evaluation import evaluate_policy
    from ..models.policy import VLMPolicy
    from ..testing import tiny_qwen2_vl
    from ..trainers.behavior_cloning import behavior_clone, expert_demonstrations

    torch.set_num_threads(args.num_threads)
    results: dict[str, Any] = {"args": asdict(args)}
    start = time.perf_counter()
    demos = expert_demonstrations(f"digiq_trl/Phone-{args.suite}-v0", args.demo_episodes, args.noise, args.seed)
    results.update(demo_steps=len(demos), collect_seconds=round(time.perf_counter() - start, 1))

    model, processor = tiny_qwen2_vl(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        seed=args.seed,
    )
    start = time.perf_counter()
    model = behavior_clone(model, processor, demos, args.output_dir, max_steps=args.max_steps,
                           batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)
    results["train_seconds"] = round(time.perf_counter() - start, 1)

    policy = VLMPolicy(model, processor, max_new_tokens=48, batch_size=100)
    if args.eval_episodes:
        counting = ValidityCountingPolicy(policy)
        start = time.perf_counter()
        results["greedy"] = evaluate_policy(counting, args.suite, split=args.eval_split,
                                            num_episodes=args.eval_episodes, seed=args.eval_seed, batch_size=100)
        results["greedy"].update(valid_action_fraction=counting.valid / max(1, counting.total),
                                 eval_seconds=round(time.perf_counter() - start, 1))
    if args.best_of_n:
        results["best_of_n"] = best_of_n_diversity(policy, args)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return results


def make_parser(prog: str | None = None) -> TrlParser:
    """The command's parser: every :class:`BaseActorArguments` field, plus ``--config``."""
    return TrlParser(BaseActorArguments, prog=prog, description=DESCRIPTION)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    """Parse flags and ``--config`` YAML, train and measure the actor, print the results as one JSON line."""
    (args,) = make_parser(prog).parse_args_and_config(argv)
    results = train_base_actor(args)
    print(json.dumps(results))
    return results
