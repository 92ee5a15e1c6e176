"""``digiq-trl train-base-actor``: behavior-clone a tiny VLM base actor in the simulated phone, and
measure it.

The embedded default's base actor (the role AutoUI plays in the Digi-Q paper): a random-init tiny
Qwen2-VL trained on noisy-expert states labelled with the expert's actions. The command reports the
share of valid action strings and the greedy success rate, and checks that Best-of-N sampling gives
diverse candidates (some of which beat the greedy action), then saves the actor::

    digiq-trl train-base-actor --output_dir outputs/base-actor
    digiq-trl train-base-actor --config examples/configs/phone_actor_tiny.yaml   # the shipped actor's recipe
    python examples/train_base_actor.py --config examples/configs/phone_actor_tiny.yaml
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trl import TrlParser

from ..actions import actions_match, parse_action, try_parse_action
from ..envs import ExpertPolicy
from . import parse_options


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
    pseudo_entities: bool = field(
        default=False,
        metadata={"help": "Add variants of the search and video goals with made-up entity names, so the actor learns "
                  "to copy queries from the goal instead of memorizing them (needs several thousand steps)."},
    )
    layout: str = field(default="fixed", metadata={"help": "Simulator layout of the demonstrations: fixed or random."})
    max_steps: int = field(default=600, metadata={"help": "Behavior-cloning optimizer steps."})
    batch_size: int = field(default=32, metadata={"help": "Behavior-cloning batch size."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine schedule)."})
    eval_episodes: int = field(default=200, metadata={"help": "Greedy evaluation episodes (0 to skip)."})
    eval_splits: list[str] = field(
        default_factory=lambda: ["test"],
        metadata={"help": "Goal splits of the greedy evaluation (train, test, heldout), each on the source phone."},
    )
    eval_seed: int = field(default=1234, metadata={"help": "Seed of the evaluation episodes."})
    num_candidates: int = field(default=16, metadata={"help": "Candidates per state in the diversity check (0 to skip)."})
    candidate_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the candidates."})
    candidate_episodes: int = field(default=50, metadata={"help": "Expert episodes whose states are sampled."})
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
    """Sample candidates on expert-visited states; how diverse, and how often one beats greedy."""
    from ..envs.collect import run_episodes

    env_id = f"digiq_trl/Phone-{args.suite}-v0"
    steps = list(run_episodes(env_id, ExpertPolicy(), args.candidate_episodes, seed=args.eval_seed + 1,
                              split=args.eval_splits[0], layout=args.layout))
    observations = [s.observation for s in steps]
    greedy = policy.act(observations)
    samples = policy.sample(observations, args.num_candidates, args.candidate_temperature)
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
        "valid_candidate_fraction": valid / (n * args.num_candidates),
        "greedy_wrong_some_candidate_right": rescued / n,
    }


def recipe(args: BaseActorArguments) -> dict[str, Any]:
    """The settings that determine the trained actor: every option but where it goes and the threads."""
    return {k: v for k, v in asdict(args).items() if k not in ("output_dir", "num_threads")}


def train_base_actor(args: BaseActorArguments) -> dict[str, Any]:
    """Collect, clone, evaluate, save (model, processor, card, results.json); returns the figures."""
    import torch

    from ..evaluation import evaluate_policy
    from ..models.policy import VLMPolicy
    from ..models.tiny import tiny_qwen2_vl
    from ..trainers.behavior_cloning import behavior_clone, expert_demonstrations

    torch.set_num_threads(args.num_threads)
    results: dict[str, Any] = {"args": asdict(args)}
    start = time.perf_counter()
    demos = expert_demonstrations(f"digiq_trl/Phone-{args.suite}-v0", args.demo_episodes, args.noise, args.seed,
                                  layout=args.layout, pseudo_entities=args.pseudo_entities)
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
    processor.save_pretrained(args.output_dir)
    Path(args.output_dir, "training_args.bin").unlink(missing_ok=True)  # a pickle: nothing to ship

    policy = VLMPolicy(model, processor, max_new_tokens=48, batch_size=100)
    if args.eval_episodes:
        results["greedy"] = {}
        for split in args.eval_splits:
            counting = ValidityCountingPolicy(policy)
            start = time.perf_counter()
            scores = evaluate_policy(counting, args.suite, split=split, num_episodes=args.eval_episodes,
                                     seed=args.eval_seed, batch_size=100, layout=args.layout)
            scores.update(valid_action_fraction=counting.valid / max(1, counting.total),
                          eval_seconds=round(time.perf_counter() - start, 1))
            results["greedy"][split] = scores
    if args.num_candidates:
        results["best_of_n"] = best_of_n_diversity(policy, args)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.output_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(base_actor_card(args, results, model.num_parameters()))
    return results


def base_actor_card(args: BaseActorArguments, results: dict[str, Any], num_parameters: int) -> str:
    """The model card of a trained base actor: what it is, its recipe (the command's settings, as YAML
    that ``--config`` reads back), its data, training time and greedy success on the source phone."""
    import yaml

    from ..trainers.model_cards import render_model_card

    rows = [f"| {split} | {scores['success_rate']:.1%} | {scores['stderr']:.1%} | {scores['num_episodes']} | "
            f"{scores['valid_action_fraction']:.1%} |" for split, scores in results.get("greedy", {}).items()]
    success = "\n".join(["| goal split | greedy success | std. error | episodes | valid actions |",
                         "|---|---|---|---|---|", *rows]) if rows else "Not evaluated (eval_episodes 0)."
    recipe_yaml = yaml.safe_dump(recipe(args), sort_keys=False)
    sections = [
        ("Recipe", "Trained with `digiq-trl train-base-actor --config <this recipe as a YAML file>` "
                   f"(digiq-trl's own command; the shipped copy's file is `examples/configs/phone_actor_tiny.yaml`):"
                   f"\n\n```yaml\n{recipe_yaml}```"),
        ("Data", f"{results['demo_steps']} states of {args.demo_episodes} noisy-expert episodes (random-action "
                 f"probability {args.noise}) on the *source* phone (`layout: {args.layout}`, train goals"
                 f"{', with made-up entity variants of the search and video goals' if args.pseudo_entities else ''}), "
                 "each labelled with the simulator expert's action."),
        ("Training", f"{args.max_steps} steps of behavior cloning at batch {args.batch_size}, AdamW, peak learning "
                     f"rate {args.learning_rate} (cosine); {num_parameters:,} parameters; "
                     f"{results['train_seconds']:.0f} s on the machine that trained it."),
        ("Source-phone success", success),
    ]
    return render_model_card(
        title="Tiny phone actor (digiq-trl)",
        summary="A tiny Qwen2-VL behavior-cloned on static demonstrations in digiq-trl's simulated phone: the "
                "pretrained base actor of the embedded default, in the role AutoUI plays in the Digi-Q paper.",
        sections=sections, tags=["digiq-trl", "gui-agent", "behavior-cloning"], license="apache-2.0",
        no_metrics_note="See *Source-phone success* below.",
    )


def make_parser(prog: str | None = None) -> TrlParser:
    """The command's parser: every :class:`BaseActorArguments` field, plus ``--config``."""
    return TrlParser(BaseActorArguments, prog=prog, description=DESCRIPTION)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    """Parse flags and ``--config`` YAML, train and measure the actor, print the results as one JSON line."""
    (args,) = parse_options(make_parser(prog), argv)
    results = train_base_actor(args)
    print(json.dumps(results))
    return results
