"""``digiq-trl evaluate``: an actor's success in the simulated phone or on Android devices, one command.

Examples::

    # the paper's protocol (the first 96 test goals in order, sampling at T = 0.8) in the simulator
    digiq-trl evaluate --actor digiq-trl/phone-actor-tiny --protocol paper --env sim --output eval/sim
    # the same on an emulator, a local VLM judging the final screens
    digiq-trl evaluate --actor outputs/run/actor/digiq/seed0 --protocol paper --env adb:emulator-5554 \\
        --judge local --judge-model Qwen/Qwen2.5-VL-7B-Instruct --output eval/emulator

Protocols: ``paper`` plays the first ``--episodes`` (96) goals of the suite's test file in order,
sampling at temperature 0.8, horizon 10 (General) or 20 (Web Shopping); ``ours`` draws the goals of
``--split`` at random from ``--seed`` and acts greedily, as the pipeline's evaluation does.

``--output`` receives ``episodes.jsonl`` (one line per episode as it ends, so an interrupted run
keeps what it played), then ``results.json``, ``report.md`` and ``viewer.html`` (every step's
screenshot and action, with the judge's decision and reasoning). A device that fails ends its
episode with the error recorded; the evaluation goes on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .envs.device_cli import add_actor_arguments, add_env_arguments, check_judge, device_serials, load_actor


PROTOCOLS = {"paper": {"split": "test", "temperature": 0.8}, "ours": {"temperature": 0.0}}
"""Each protocol's fixed split (paper) and default sampling temperature."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``parser`` (made by :func:`digiq_trl.cli.add_tool_parser`)."""
    add_actor_arguments(parser)
    add_env_arguments(parser)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="paper",
                        help="'paper': the first --episodes test goals in order, T = 0.8; 'ours': random goals "
                        "of --split from --seed, greedy")
    parser.add_argument("--suite", choices=("general", "webshop"), default="general", help="task suite")
    parser.add_argument("--split", choices=("train", "test", "heldout"), default="test",
                        help="goal split of --protocol ours (paper: always test)")
    parser.add_argument("--episodes", type=int, default=96, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="seeds the episodes and the actor's sampling")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: the protocol's)")
    parser.add_argument("--horizon", type=int, help="steps per episode (default: 10 general, 20 webshop)")
    parser.add_argument("--phone", choices=("source", "target"), default="source", help="simulated phone (sim)")
    parser.add_argument("--layout", choices=("fixed", "random"), default="fixed", help="screen layout mode (sim)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="simulated phones played in lockstep (sim; on devices, one per serial); as many as "
                        "devices makes a sampled sim run comparable with a device run episode by episode")
    parser.add_argument("--output", required=True, help="folder for episodes.jsonl, results.json, report.md, viewer.html")


def run(args: argparse.Namespace) -> int:
    """Evaluate, writing each episode as it ends, then the results, report and viewer."""
    check_judge(args)
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SystemExit(f"{output}: exists and is not empty; choose another --output")
    settings = _settings(args)
    import torch

    from .envs.collect import run_episodes, run_name, transitions_from_steps
    from .evaluation import episode_records, summarize_episodes
    from .models.loading import on_process_device
    from .models.policy import VLMPolicy

    envs = _envs(args, settings)
    model, processor = load_actor(args.actor, args.base)
    policy = VLMPolicy(on_process_device(model), processor, temperature=settings["temperature"],
                       batch_size=max(len(envs), args.batch_size))
    torch.manual_seed(args.seed)
    steps: list[Any] = []

    def kept(stream: Any) -> Any:
        for step in stream:
            steps.append(step)
            yield step

    output.mkdir(parents=True, exist_ok=True)
    records: dict[int, dict[str, Any]] = {}
    with (output / "episodes.jsonl").open("w", encoding="utf-8") as log:
        played = run_episodes(envs, policy, args.episodes, seed=args.seed, goals=settings.pop("goals"))
        for index, record in episode_records(kept(played)):
            records[index] = record
            log.write(json.dumps({"episode": index, **record}) + "\n")
            log.flush()
    results = {**settings, **summarize_episodes([records[i] for i in sorted(records)])}
    _write(output / "results.json", json.dumps(results, indent=2) + "\n")
    _write(output / "report.md", _report(results))
    name = run_name(envs[0], args.seed)
    _write_viewer(transitions_from_steps(steps, name), output / "viewer.html", records, name)
    print(json.dumps({"output": str(output), "episodes": results["num_episodes"],
                      "success_rate": results["success_rate"], "device_errors": results["device_errors"],
                      "judge_errors": results["judge_errors"]}))
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings (recorded in the results) and its goals (None: drawn from the seed)."""
    from .envs.device_cli import judge_description
    from .envs.phone import DEFAULT_HORIZONS
    from .evaluation import first_goals

    protocol = PROTOCOLS[args.protocol]
    split = protocol.get("split", args.split)
    goals = None
    if args.protocol == "paper":
        try:
            goals = first_goals(args.suite, "test", args.episodes)
        except ValueError as error:
            raise SystemExit(f"--episodes {args.episodes}: {error}") from None
    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    return {"protocol": args.protocol, "env": args.env, "actor": args.actor, "base": args.base, "suite": args.suite,
            "split": split, "temperature": protocol["temperature"] if args.temperature is None else args.temperature,
            "horizon": args.horizon or DEFAULT_HORIZONS[args.suite], "seed": args.seed,
            "judge": judge_description(args), "goals": goals,
            **({"phone": args.phone, "layout": args.layout} if device_serials(args.env) is None else {})}


def _envs(args: argparse.Namespace, settings: dict[str, Any]) -> list[Any]:
    """The simulated phones (``--batch-size`` of them) or the devices of ``--env``."""
    from .envs.collect import make_envs
    from .envs.device_cli import device_envs
    from .envs.phone import PhoneEnv

    if device_serials(args.env) is not None:
        return device_envs(args, args.suite, settings["split"], settings["horizon"])
    template = PhoneEnv(suite=args.suite, split=settings["split"], horizon=settings["horizon"], phone=args.phone,
                        layout=args.layout)
    return make_envs(template, max(1, min(args.batch_size, args.episodes)))


def _report(results: dict[str, Any]) -> str:
    """A short Markdown report: settings, success rate, per task kind, errors."""
    rate, stderr = 100 * results["success_rate"], 100 * results["stderr"]
    lines = [
        f"# Evaluation: {results['actor']}", "",
        f"{results['num_episodes']} episodes, protocol `{results['protocol']}` on `{results['env']}` "
        f"({results['suite']}, {results['split']} goals, T = {results['temperature']}, horizon {results['horizon']}, "
        f"seed {results['seed']}); judge: {results['judge']}.", "",
        f"**Success rate: {rate:.1f} % ± {stderr:.1f} %** (binomial standard error); "
        f"mean episode length {results['mean_episode_length']:.1f} steps; {results['device_errors']} episodes "
        f"ended by a device error; {results['judge_errors']} judge errors.", "",
        "| task kind | successes | episodes |", "|---|---|---|",
        *(f"| {kind} | {row['successes']} | {row['episodes']} |" for kind, row in results["by_kind"].items()),
    ]
    return "\n".join(lines) + "\n"


def _write_viewer(dataset: Any, path: Path, records: dict[int, dict[str, Any]], name: str) -> None:
    """The viewer page, each episode with its judge verdict and device error."""
    from .viewer import write_dataset_viewer

    notes = {f"{name}-ep{index:06d}": {key: record[key] for key in ("judge", "error") if key in record}
             for index, record in records.items()}
    write_dataset_viewer(dataset, path, notes=notes, title=f"Evaluation of {path.parent.name}")


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
