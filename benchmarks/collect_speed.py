"""Collection speed: scripted-policy transitions per second in the simulated phone.

Collects at least 1,000 transitions with the noisy expert (default noise, General suite, 64 phones in
lockstep) through :func:`digiq_trl.envs.collect_transitions`: rendering, the dataset build (PNG
encoding of both screenshots) and validation included. The baseline is the acceptance budget,
1,000 transitions in 60 s; ``ratio`` is how many times faster than that budget collection runs
(the median run of the repeats). One torch thread. Ends with one JSON line:
``{"benchmark": "collect_speed", "transitions": ..., "seconds": ..., "transitions_per_s": ...,
"baseline": 60.0, "baseline_kind": "budget_seconds_per_1000", "ratio": ...}``.

Usage: ``python benchmarks/collect_speed.py [--repeats 3] [--suite general]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from digiq_trl.envs import NoisyExpertPolicy, PhoneEnv, collect_transitions


BUDGET_SECONDS_PER_1000 = 60.0
TARGET_TRANSITIONS = 1000


def collect_once(suite: str, episodes: int, seed: int) -> tuple[int, float]:
    """Transitions collected and wall seconds for one run."""
    start = time.perf_counter()
    ds = collect_transitions(PhoneEnv(suite), NoisyExpertPolicy(seed=seed), episodes, seed=seed, batch_size=64)
    return len(ds), time.perf_counter() - start


def main() -> None:
    """Measure and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--suite", default="general", choices=("general", "webshop"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_episode = {"general": 8.3, "webshop": 15.0}[args.suite]
    episodes = int(TARGET_TRANSITIONS / per_episode * 1.1) + 1
    runs = []
    for repeat in range(args.repeats):
        count, seconds = collect_once(args.suite, episodes, seed=repeat)
        while count < TARGET_TRANSITIONS:
            episodes = int(episodes * 1.2) + 1
            count, seconds = collect_once(args.suite, episodes, seed=repeat)
        runs.append((count, seconds))
    count, seconds = sorted(runs, key=lambda run: run[0] / run[1])[len(runs) // 2]
    rate = count / seconds
    print(json.dumps({
        "benchmark": "collect_speed",
        "transitions": count,
        "seconds": round(seconds, 2),
        "transitions_per_s": round(rate, 1),
        "baseline": BUDGET_SECONDS_PER_1000,
        "baseline_kind": "budget_seconds_per_1000",
        "ratio": round(rate * BUDGET_SECONDS_PER_1000 / TARGET_TRANSITIONS, 1),
    }))


if __name__ == "__main__":
    main()
