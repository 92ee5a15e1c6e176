"""``digiq-trl collect``: play a policy in the simulated phone or on Android devices and save the transitions.

Examples::

    digiq-trl collect --suite general --policy noisy-expert --noise 0.65 --episodes 500 --seed 0 \\
        --output data/general-noisy
    # offline data from an emulator, the actor sampling as the paper's behavior policy did
    digiq-trl collect --env adb:emulator-5554 --policy actor --actor digiq-trl/phone-actor-tiny \\
        --temperature 0.8 --judge endpoint --judge-url http://127.0.0.1:8000/v1 \\
        --judge-model Qwen/Qwen2.5-VL-7B-Instruct --episodes 100 --output data/emulator

On a device the rewards are the judge's verdicts, the scripted experts are not available (they read
the simulator's state), and episodes that a device error ended are left out of the dataset.

The dataset is written with ``save_to_disk`` into a temporary folder beside ``--output`` and renamed
into place only when complete, so a failed run never loses an existing output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..discount import DEFAULT_GAMMA
from ..staging import check_replaceable_dataset, staged_output
from .collect import collect_transitions
from .device_cli import add_actor_arguments, add_env_arguments, check_judge, device_envs, device_serials, load_actor
from .phone import LAYOUTS, PhoneEnv
from .policies import ExpertPolicy, NoisyExpertPolicy, Policy, RandomPolicy
from .tasks import SPLITS, SUITES


POLICIES = ("expert", "noisy-expert", "random", "actor")
SIMULATOR_POLICIES = ("expert", "noisy-expert")
"""Policies that read the simulator's expert action, so cannot play on a device."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``collect`` options to ``parser`` (made by :func:`digiq_trl.cli.add_tool_parser`)."""
    parser.add_argument("--suite", choices=SUITES, default="general", help="task suite")
    parser.add_argument("--split", choices=SPLITS, default="train", help="goal split")
    parser.add_argument("--policy", choices=POLICIES, default="noisy-expert", help="behavior policy")
    parser.add_argument("--noise", type=float, default=NoisyExpertPolicy.DEFAULT_NOISE,
                        help="random-action probability of noisy-expert")
    add_actor_arguments(parser, default=None)
    parser.add_argument("--temperature", type=float, default=1.0, help="the actor's sampling temperature (0: greedy)")
    add_env_arguments(parser)
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="seeds goals, layouts and the policy")
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="discount of mc_return")
    parser.add_argument("--layout", choices=LAYOUTS, default="fixed", help="screen layout mode")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="simulated phones stepped in lockstep (on devices, one per serial)")
    parser.add_argument("--output", required=True, help="folder to write the dataset to (save_to_disk)")


def make_policy(name: str, noise: float, seed: int) -> Policy:
    """The scripted policy called ``name`` (one of :data:`POLICIES` but ``actor``)."""
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
    check_judge(args)
    on_device = device_serials(args.env) is not None
    if on_device and args.policy in SIMULATOR_POLICIES:
        raise SystemExit(f"--policy {args.policy} reads the simulator's expert; on a device use actor or random")
    if args.policy == "actor" and not args.actor:
        raise SystemExit("--policy actor needs --actor")
    output = Path(args.output)
    try:
        check_replaceable_dataset(output)
    except FileExistsError as error:
        raise SystemExit(str(error)) from None
    env = device_envs(args, args.suite, args.split) if on_device else PhoneEnv(suite=args.suite, split=args.split,
                                                                              layout=args.layout)
    policy = _policy(args, args.batch_size)
    torch.manual_seed(args.seed)
    ds = collect_transitions(env, policy, args.episodes, seed=args.seed, gamma=args.gamma,
                             batch_size=args.batch_size)
    with staged_output(output) as stage:
        ds.save_to_disk(str(stage))
    kept = sum(ds["done"])
    successes = sum(1 for done, r in zip(ds["done"], ds["trajectory_reward"]) if done and r > 0)
    print(json.dumps({"output": str(output), "episodes": kept, "transitions": len(ds),
                      "success_rate": successes / max(1, kept), "device_errors": args.episodes - kept}))
    return 0


def _policy(args: argparse.Namespace, batch_size: int) -> Policy:
    """The behavior policy: the actor (sampling at ``--temperature``) or a scripted one."""
    if args.policy != "actor":
        return make_policy(args.policy, args.noise, args.seed)
    from ..models.policy import VLMPolicy

    return VLMPolicy(*load_actor(args.actor, args.base), temperature=args.temperature, batch_size=batch_size)
