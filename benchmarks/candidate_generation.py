"""Best-of-N candidate generation: one batched, prefix-shared decode for a batch of states vs loops.

``BestOfNActorTrainer`` samples N candidates for a whole batch of states at once
(:meth:`VLMPolicy.sample`). For Qwen2-VL models each prompt runs once, its KV cache is copied to
the N samples, and the library's own decoding loop feeds one token per step: new keys and values
go into room reserved in the cache (no per-step concatenation), tokens are drawn with the
Gumbel-max trick, and finished rows leave the batch. Baselines, all in one process, alternating
inside each repeat: ``expanded`` (the same batch through ``generate(num_return_sequences=N)``,
each prompt repeated N times) and ``per_state`` (the naive way: one such ``generate`` per state).
The JSON line reports the median over repeats of ``ours / per_state`` throughput (``ratio``) and of
``ours / expanded`` (``prefix_sharing_ratio``), in states per second.

The benchmark's model is random-init, so its samples rarely stop early: the figure does not count
what dropping finished rows saves with a trained actor, whose answers end after ~20 tokens.

Usage:
    python benchmarks/candidate_generation.py --states 8 --num-candidates 16 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable


os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

from digiq_trl.models.policy import VLMPolicy
from digiq_trl.models.tiny import tiny_qwen2_vl


def observations(num_states: int, seed: int = 0) -> list[dict]:
    """Random screenshots with a goal and a short history (the prompt length of real states)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "image": Image.fromarray(rng.integers(0, 255, (224, 112, 3), dtype=np.uint8)),
            "goal": "Search for hotels in Paris",
            "history": "tap [0.52, 0.31]; type \"hotels\"" if i % 2 else "",
        }
        for i in range(num_states)
    ]


def states_per_second(run: Callable[[], None], num_states: int) -> float:
    """Throughput of one call of ``run`` that handles ``num_states`` states."""
    start = time.perf_counter()
    run()
    return num_states / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=8, help="states per batch")
    parser.add_argument("--num-candidates", type=int, default=16, help="N samples per state")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per candidate (a tiny-tokenizer tap is ~24)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-sample", action="store_true", help="also time a loop of one generate per sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="e.g. cuda; batching gains most where a batch costs ~one step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, processor = tiny_qwen2_vl()
    model.to(args.device)
    states, n = observations(args.states), args.num_candidates
    shared = VLMPolicy(model, processor, max_new_tokens=args.max_new_tokens, batch_size=args.states * n)
    expanded = VLMPolicy(model, processor, max_new_tokens=args.max_new_tokens, batch_size=args.states * n,
                         prefix_sharing=False)
    runs: dict[str, Callable[[], None]] = {
        "ours": lambda: shared.sample(states, n, 1.0),
        "expanded": lambda: expanded.sample(states, n, 1.0),
        "per_state": lambda: [expanded.sample([s], n, 1.0) for s in states],
    }
    if args.per_sample:
        runs["per_sample"] = lambda: [expanded.sample([s], 1, 1.0) for s in states for _ in range(n)]
    runs["ours"]()  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            timings[name].append(states_per_second(run, len(states)))
    def median_ratio(baseline: str) -> float:
        return round(statistics.median(o / b for o, b in zip(timings["ours"], timings[baseline])), 2)

    for name, values in timings.items():
        print(f"{name}: median {statistics.median(values):.2f} states/s over {args.repeats} repeats")
    if "per_sample" in timings:
        print(f"ours / per_sample: {median_ratio('per_sample'):.1f}x")
    print(json.dumps({
        "benchmark": "candidate_generation",
        "ours": round(statistics.median(timings["ours"]), 3),
        "baseline": round(statistics.median(timings["per_state"]), 3),
        "unit": "states/s",
        "ratio": median_ratio("per_state"),
        "prefix_sharing_ratio": median_ratio("expanded"),
    }))


if __name__ == "__main__":
    main()
