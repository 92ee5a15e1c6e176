"""``digiq-trl collect``: play a scripted policy in the simulated phone and save the transitions.

Example::

    digiq-trl collect --suite general --policy noisy-expert --noise 0.65 --episodes 500 --seed 0 \\
        --output data/general-noisy

The dataset is written with ``save_to_disk`` into a temporary folder beside ``--output`` and renamed
into place only when complete, so a failed run never loses an existing output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..staging import check_replaceable_dataset, staged_output
from .collect import collect_transitions
from .phone import LAYOUTS, PhoneEnv
from .policies import ExpertPolicy, NoisyExpertPolicy, Policy, RandomPolicy
from .tasks import SPLITS, SUITES


POLICIES = ("expert", "noisy-expert", "random")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``collect`` subcommand."""
    parser = subparsers.add_parser(
        "collect",
        help="collect a transitions dataset with a scripted policy in the simulated phone",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", choices=SUITES, default="general", help="task suite")
    parser.add_argument("--split", choices=SPLITS, default="train", help="goal split")
    parser.add_argument("--policy", choices=POLICIES, default="noisy-expert", help="behavior policy")
    parser.add_argument("--noise", type=float, default=NoisyExpertPolicy.DEFAULT_NOISE,
                        help="random-action probability of noisy-expert")
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="seeds goals, layouts and the policy")
    parser.add_argument("--gamma", type=float, default=0.95, help="discount of mc_return")
    parser.add_argument("--layout", choices=LAYOUTS, default="fixed", help="screen layout mode")
    parser.add_argument("--batch-size", type=int, default=64, help="phones stepped in lockstep")
    parser.add_argument("--output", required=True, help="folder to write the dataset to (save_to_disk)")
    parser.set_defaults(func=run)


def make_policy(name: str, noise: float, seed: int) -> Policy:
    """The scripted policy called ``name`` (one of :data:`POLICIES`)."""
    if name == "expert":
        return ExpertPolicy()
    if name == "noisy-expert":
        return NoisyExpertPolicy(noise=noise, seed=seed)
    return RandomPolicy(seed=seed)


def run(args: argparse.Namespace) -> int:
    """Collect, save atomically, print a one-line JSON summary."""
    torch.set_num_threads(1)
    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    output = Path(args.output)
    try:
        check_replaceable_dataset(output)
    except FileExistsError as error:
        raise SystemExit(str(error)) from None
    env = PhoneEnv(suite=args.suite, split=args.split, layout=args.layout)
    policy = make_policy(args.policy, args.noise, args.seed)
    ds = collect_transitions(env, policy, args.episodes, seed=args.seed, gamma=args.gamma,
                             batch_size=args.batch_size)
    with staged_output(output) as stage:
        ds.save_to_disk(str(stage))
    successes = sum(1 for done, r in zip(ds["done"], ds["trajectory_reward"]) if done and r > 0)
    print(json.dumps({"output": str(output), "episodes": args.episodes, "transitions": len(ds),
                      "success_rate": successes / args.episodes}))
    return 0
