"""Candidate-action features: prefix sharing vs one full forward per candidate.

Best-of-N scores N candidate actions per state. They share the screenshot and the prompt, so
:class:`~digiq_trl.models.features.VLMFeatureExtractor` runs that prefix once into a KV cache and
only the short answers per candidate; the baseline runs prompt + answer for every candidate (one
batch of N full sequences, the ViT included). Both use the same extractor setting (default middle
layer, mean pooling), so the ratio isolates prefix sharing.

Model: a random-init Qwen2-VL built from a config (text hidden 512, 8 layers; 2-layer ViT), the
in-memory tiny tokenizer; N=16 candidates of 30-40 answer tokens; screenshots of 224x224 (64 image
tokens) and 448x448 (256 image tokens). One torch thread; ours and the baseline alternate inside
each repeat and the median ratio is reported. Prints one JSON line per size, the 256-token one last:
``{"benchmark": "candidate_features", "image_tokens": 256, "ours": ..., "baseline": ...,
"unit": "states/s", "ratio": ..., "max_abs_diff": ...}``.

Usage: ``python benchmarks/candidate_features.py [--repeats 3] [--states 2]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from digiq_trl.actions import DeviceAction, format_action
from digiq_trl.models.features import VLMFeatureExtractor
from digiq_trl.models.processing import Qwen2VLImageTextProcessor
from digiq_trl.models.tiny import CHAT_TEMPLATE, IMAGE_TOKEN, VIDEO_TOKEN, VISION_END, VISION_START, tiny_tokenizer


NUM_CANDIDATES = 16
ANSWER_TOKENS = (30, 40)
GOALS = ["Search for a good Italian restaurant nearby", "Open the settings and turn on airplane mode"]
HISTORIES = ['tap [0.12, 0.5]; type "italian restaurant"', "home; swipe [0.8, 0.5] -> [0.2, 0.5]"]


def build(side: int) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLImageTextProcessor]:
    """Random Qwen2-VL (hidden 512, 8 layers, 2-layer ViT) and a processor for side x side screens."""
    tokenizer = tiny_tokenizer()
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
            num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
            pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            depth=2, embed_dim=256, hidden_size=512, num_heads=4, mlp_ratio=2, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_start_token_id=tokenizer.convert_tokens_to_ids(VISION_START),
        vision_end_token_id=tokenizer.convert_tokens_to_ids(VISION_END),
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    pixels = side * side
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": pixels, "longest_edge": pixels})
    return model, Qwen2VLImageTextProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def candidates(extractor: VLMFeatureExtractor, goal: str, history: str, rng: random.Random) -> list[str]:
    """N distinct actions whose answers are 30-40 tokens (swipes and typed texts)."""
    words = "the nearest open italian restaurant with good reviews and cheap prices tonight".split()
    found: list[str] = []
    while len(found) < NUM_CANDIDATES:
        if rng.random() < 0.5:
            point = lambda: (round(rng.random(), 4), round(rng.random(), 4))  # noqa: E731
            action = format_action(DeviceAction.swipe(point(), point()), with_plan=True)
        else:
            action = format_action(DeviceAction.type_text(" ".join(rng.sample(words, rng.randint(3, 9)))))
        length = len(extractor.answer_ids(goal, history, action))
        if ANSWER_TOKENS[0] <= length <= ANSWER_TOKENS[1] and action not in found:
            found.append(action)
    return found


def max_abs_diff(a: tuple[torch.Tensor, list[torch.Tensor]], b: tuple[torch.Tensor, list[torch.Tensor]]) -> float:
    """Largest difference between two (states, per-state actions) results."""
    diffs = [(a[0] - b[0]).abs().max()] + [(x - y).abs().max() for x, y in zip(a[1], b[1])]
    return float(max(diffs))


def run_size(side: int, repeats: int, num_states: int) -> dict:
    """Time ours vs the baseline at one screenshot size; return the JSON record."""
    model, processor = build(side)
    ours = VLMFeatureExtractor(model, processor, candidate_batch_size=NUM_CANDIDATES)
    naive = VLMFeatureExtractor(model, processor, prefix_sharing=False, candidate_batch_size=NUM_CANDIDATES)
    rng = random.Random(0)
    pixels = np.random.default_rng(0).integers(0, 256, (num_states, side, side, 3), dtype=np.uint8)
    images = [Image.fromarray(p) for p in pixels]
    goals = [GOALS[i % 2] for i in range(num_states)]
    histories = [HISTORIES[i % 2] for i in range(num_states)]
    actions = [candidates(ours, g, h, rng) for g, h in zip(goals, histories)]
    args = (images, goals, histories, actions)
    for extractor in (ours, naive):
        extractor.state_action_features(images[:1], goals[:1], histories[:1], [actions[0][:2]])
    speeds: dict[str, list[float]] = {"ours": [], "baseline": []}
    results: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] = {}
    for _ in range(repeats):
        for name, extractor in (("ours", ours), ("baseline", naive)):
            start = time.perf_counter()
            results[name] = extractor.state_action_features(*args)
            speeds[name].append(num_states / (time.perf_counter() - start))
    diff = max_abs_diff(results["ours"], results["baseline"])
    ratios = [o / b for o, b in zip(speeds["ours"], speeds["baseline"])]
    image_tokens = len(processor(text=["<|image_pad|>"], images=images[:1])["input_ids"][0])
    return {
        "benchmark": "candidate_features",
        "image_tokens": image_tokens,
        "ours": round(statistics.median(speeds["ours"]), 3),
        "baseline": round(statistics.median(speeds["baseline"]), 3),
        "unit": "states/s",
        "ratio": round(statistics.median(ratios), 2),
        "max_abs_diff": float(f"{diff:.3g}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per size (median reported)")
    parser.add_argument("--states", type=int, default=2, help="states per timed call (16 candidates each)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for side in (224, 448):
        started = time.perf_counter()
        print(json.dumps(run_size(side, args.repeats, args.states)), flush=True)
        print(f"# {side}x{side}: {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
