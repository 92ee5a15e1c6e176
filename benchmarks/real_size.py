"""Peak memory and throughput of every Digi-Q stage at real model and screenshot sizes.

Builds Qwen2-VL-2B-Instruct, Qwen2.5-VL-3B-Instruct or Qwen2.5-VL-7B-Instruct from their published
architecture numbers (:data:`MODELS`) with random weights, so nothing is downloaded, and runs the
library's own code for each stage on phone screenshots (default 1080x2400, resized by the Qwen2-VL
image processor within ``--min-pixels`` / ``--max-pixels``):

* ``features``: :class:`~digiq_trl.models.features.VLMFeatureExtractor` on ``--batch-size`` states
  with ``--num-candidates`` actions each; the candidates share the prompt's KV cache. Baseline: the
  same extractor with ``prefix_sharing=False`` (one full forward per candidate).
* ``generation``: :meth:`VLMPolicy.sample <digiq_trl.models.policy.VLMPolicy.sample>` of N
  candidates for a batch of states, as the actor stage prepares them. Baseline: ``generate`` with
  ``num_return_sequences=N`` (each prompt repeated N times). Random weights almost never emit the
  stop token, so every sample runs ``--max-new-tokens`` steps: the worst case.
* ``representation``: LoRA fine-tuning steps of
  :class:`~digiq_trl.trainers.representation_trainer.RepresentationTrainer` (``trl.SFTTrainer``) on
  actionability examples, batch ``--batch-size``. No baseline (``null``).
* ``actor``: LoRA training steps of
  :class:`~digiq_trl.trainers.actor_trainer.BestOfNActorTrainer` (its collator and weighted NLL,
  ``weighting="sft"`` so no critic or candidate preparation runs), batch ``--batch-size``. No baseline.

Texts go through the library's tiny in-memory tokenizer (no download): an action is ~25-40 of its
tokens instead of ~60 with Qwen's tokenizer, and Qwen's chat template adds a ~20-token system
prompt. Image tokens (``image_tokens`` in the output) dominate every sequence, so lengths are close
to real; the embedding and output layers keep the real vocabulary size.

Prints one JSON line per stage and model, e.g. ``{"benchmark": "real_size/features", "model":
"qwen2-vl-2b", "image_tokens": 3354, "ours": ..., "baseline": ..., "unit": "states/s", "ratio": ...,
"peak_memory_gib": ..., "baseline_peak_memory_gib": ...}``. ``ours``/``baseline`` are throughputs
(median over ``--steps`` timed repeats or training steps after one warm-up; training steps include
collating the batch), ``ratio`` is ours / baseline, and peak memory is ``torch.cuda.max_memory_allocated``
during the stage, weights included (``null`` on CPU). A measurement that runs out of GPU memory is
``null`` with ``"error": "out of memory"``.

Usage:
    python benchmarks/real_size.py --device cuda                       # 2B and 3B, all stages
    python benchmarks/real_size.py --device cuda --model qwen2.5-vl-7b --batch-size 4
    python benchmarks/real_size.py --device cpu --dtype float32 --model qwen2-vl-2b --layers 2 \\
        --max-pixels 50176 --batch-size 2 --num-candidates 4 --max-new-tokens 8 --steps 1  # CPU smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image, ImageDraw
from transformers import (
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    TrainerCallback,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from digiq_trl.actions import ActionType, DeviceAction, format_action, format_history
from digiq_trl.models.features import VLMFeatureExtractor
from digiq_trl.models.policy import VLMPolicy
from digiq_trl.models.processing import Qwen2VLImageTextProcessor
from digiq_trl.models.published import PUBLISHED_ARCHITECTURES
from digiq_trl.models.tiny import CHAT_TEMPLATE, IMAGE_TOKEN, VIDEO_TOKEN, VISION_END, VISION_START, tiny_tokenizer
from digiq_trl.prompts import render_prompt
from digiq_trl.representation import actionability_example
from digiq_trl.trainers.actor_config import BestOfNActorConfig
from digiq_trl.trainers.actor_trainer import BestOfNActorTrainer
from digiq_trl.trainers.representation_config import RepresentationConfig
from digiq_trl.trainers.representation_trainer import RepresentationTrainer


STAGES = ("features", "generation", "representation", "actor")
States = list[dict[str, Any]]
Record = dict[str, Any]
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 56 * 56, 28 * 28 * 16384
"""The Qwen2-VL / Qwen2.5-VL image processors' defaults (``min_pixels`` 3,136, ``max_pixels`` 12,845,056)."""


@dataclass(frozen=True)
class ModelSpec:
    """One checkpoint: its Hub id (whose published architecture builds it) and its classes."""

    hub_id: str
    model_class: type[PreTrainedModel]
    config_class: type


MODELS: dict[str, ModelSpec] = {
    "qwen2-vl-2b": ModelSpec("Qwen/Qwen2-VL-2B-Instruct", Qwen2VLForConditionalGeneration, Qwen2VLConfig),
    "qwen2.5-vl-3b": ModelSpec("Qwen/Qwen2.5-VL-3B-Instruct", Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig),
    "qwen2.5-vl-7b": ModelSpec("Qwen/Qwen2.5-VL-7B-Instruct", Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig),
}
"""The checkpoints, by short name; their architectures are :data:`~digiq_trl.models.published.PUBLISHED_ARCHITECTURES`."""


GOALS = (
    "Search for a good Italian restaurant nearby",
    "Open the settings and turn on airplane mode",
    "What's the price of the Sony WH-1000XM5 on bestbuy.com?",
    "Set an alarm for 7am tomorrow",
)


def build(name: str, args: argparse.Namespace) -> tuple[PreTrainedModel, Qwen2VLImageTextProcessor]:
    """The random-init model ``name`` on ``args.device`` in ``args.dtype``, and its processor.

    With ``args.layers`` only that many text decoder layers and vision blocks are kept (smoke runs).
    """
    spec = MODELS[name]
    published = PUBLISHED_ARCHITECTURES[spec.hub_id]
    tokenizer = tiny_tokenizer()
    text = dict(published.text, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(published.vision)
    if args.layers:
        text["num_hidden_layers"] = vision["depth"] = args.layers
        if "fullatt_block_indexes" in vision:
            vision["fullatt_block_indexes"] = [args.layers - 1]
    config = spec.config_class(
        text_config=text, vision_config=vision, tie_word_embeddings=published.tie_word_embeddings,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_start_token_id=tokenizer.convert_tokens_to_ids(VISION_START),
        vision_end_token_id=tokenizer.convert_tokens_to_ids(VISION_END),
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = spec.model_class._from_config(config, dtype=getattr(torch, args.dtype)).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": args.min_pixels, "longest_edge": args.max_pixels},
        patch_size=14, merge_size=2, temporal_patch_size=2,
    )
    return model, Qwen2VLImageTextProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def screenshot(width: int, height: int, seed: int) -> Image.Image:
    """A synthetic phone screen: a status bar, a search field and list rows with random colours."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, height // 30), fill=(30, 30, 30))
    draw.rounded_rectangle((width // 20, height // 15, width * 19 // 20, height // 9), radius=20, outline=(90, 90, 90))
    row = height // 12
    for top in range(height // 6, height - row, row):
        color = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((width // 20, top + row // 6, width // 20 + row * 2 // 3, top + row * 5 // 6), fill=color)
        draw.rectangle((width // 4, top + row // 3, width * rng.randint(5, 9) // 10, top + row // 2), fill=(60, 60, 60))
    return image


def random_action(rng: random.Random) -> str:
    """An AutoUI action string with its plan prefix (taps, swipes, typed texts, presses)."""
    point = lambda: (round(rng.random(), 4), round(rng.random(), 4))  # noqa: E731
    kind = rng.choice(["tap", "tap", "swipe", "type", "press"])
    if kind == "tap":
        action = DeviceAction.tap(*point())
    elif kind == "swipe":
        action = DeviceAction.swipe(point(), point())
    elif kind == "type":
        action = DeviceAction.type_text(" ".join(rng.sample(rng.choice(GOALS).split(), 3)))
    else:
        action = DeviceAction.press(rng.choice([ActionType.PRESS_BACK, ActionType.PRESS_HOME, ActionType.PRESS_ENTER]))
    return format_action(action, with_plan=True)


def make_states(count: int, args: argparse.Namespace, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` states ``{"image", "goal", "history", "action"}`` with a few previous actions each."""
    rng = random.Random(seed)
    width, height = args.screen
    states = []
    for i in range(count):
        previous = [DeviceAction.tap(rng.random(), rng.random()) for _ in range(rng.randint(1, 4))]
        states.append({
            "image": screenshot(width, height, seed + i), "goal": rng.choice(GOALS),
            "history": format_history(previous), "action": random_action(rng),
        })
    return states


def sequence_sizes(processor: Qwen2VLImageTextProcessor, state: dict[str, Any]) -> dict[str, int]:
    """Image tokens of one screenshot and tokens of its whole prompt."""
    prompt = render_prompt(processor, state["goal"], state["history"])
    encoded = processor(text=[prompt], images=[state["image"]], return_tensors="pt")
    image_tokens = int(encoded["image_grid_thw"].prod()) // processor.image_processor.merge_size**2
    return {"image_tokens": image_tokens, "prompt_tokens": int(encoded["input_ids"].shape[1])}


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


@contextlib.contextmanager
def _out_of_memory_as_none(record: dict[str, Any], key: str) -> Iterator[None]:
    """Record ``key`` as ``None`` and an ``"error"`` when the body runs out of GPU memory."""
    try:
        yield
    except torch.OutOfMemoryError:
        record[key] = None
        record["error"] = "out of memory"
        gc.collect()
        torch.cuda.empty_cache()


def timed(run: Callable[[], Any], device: str, repeats: int) -> tuple[float, float | None]:
    """Median seconds of ``repeats`` calls of ``run`` (after one warm-up call) and the peak memory."""
    run()
    _reset_peak(device)
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), _peak_gib(device)


def compare(
    record: Record, ours: Callable[[], Any], baseline: Callable[[], Any], items: int, args: argparse.Namespace
) -> Record:
    """Fill ``record`` with the throughputs (``items`` per call), their ratio and the peak memories."""
    record.update(ours=None, baseline=None, ratio=None, peak_memory_gib=None, baseline_peak_memory_gib=None)
    for name, run, memory in (("ours", ours, "peak_memory_gib"), ("baseline", baseline, "baseline_peak_memory_gib")):
        with _out_of_memory_as_none(record, name):
            seconds, record[memory] = timed(run, args.device, args.steps)
            record[name] = round(items / seconds, 3)
    if record["ours"] and record["baseline"]:
        record["ratio"] = round(record["ours"] / record["baseline"], 2)
    return record


def stage_features(model: PreTrainedModel, processor: Any, states: States, args: argparse.Namespace) -> Record:
    """Candidate features of a batch of states: prefix-shared vs one full forward per candidate."""
    rng = random.Random(1)
    batch = (
        [s["image"] for s in states], [s["goal"] for s in states], [s["history"] for s in states],
        [[random_action(rng) for _ in range(args.num_candidates)] for _ in states],
    )
    shared = VLMFeatureExtractor(model, processor, candidate_batch_size=args.num_candidates)
    naive = VLMFeatureExtractor(model, processor, prefix_sharing=False, candidate_batch_size=args.num_candidates)
    record = {"unit": "states/s", "layer": shared.layer}
    return compare(record, lambda: shared.state_action_features(*batch),
                   lambda: naive.state_action_features(*batch), len(states), args)


def stage_generation(model: PreTrainedModel, processor: Any, states: States, args: argparse.Namespace) -> Record:
    """N sampled candidates per state: the library's prefix-shared decoding vs ``generate``."""
    observations = [{k: s[k] for k in ("image", "goal", "history")} for s in states]
    size = len(states) * args.num_candidates
    shared = VLMPolicy(model, processor, max_new_tokens=args.max_new_tokens, batch_size=size)
    expanded = VLMPolicy(model, processor, max_new_tokens=args.max_new_tokens, batch_size=size, prefix_sharing=False)
    record = {"unit": "states/s", "max_new_tokens": args.max_new_tokens}
    return compare(record, lambda: shared.sample(observations, args.num_candidates, 1.0),
                   lambda: expanded.sample(observations, args.num_candidates, 1.0), len(states), args)


class StepClock(TrainerCallback):
    """Wall time between consecutive optimizer steps (collation included) and the peak GPU memory."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.ends: list[float] = []
        self.peak_gib: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _reset_peak(self.device)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _synchronize(self.device)
        self.ends.append(time.perf_counter())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.peak_gib = _peak_gib(self.device)

    def samples_per_second(self, batch_size: int) -> float:
        """Median throughput over the steps after the first (warm-up) one."""
        return round(batch_size / statistics.median(np.diff(self.ends)), 3)


def training_arguments(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """``TrainingArguments`` shared by both training stages: ``args.steps`` timed steps after one warm-up."""
    on_gpu = args.device.startswith("cuda")
    return dict(
        output_dir=output_dir, max_steps=args.steps + 1, per_device_train_batch_size=args.batch_size,
        activation_checkpointing=args.activation_checkpointing, bf16=on_gpu and args.dtype == "bfloat16",
        use_cpu=not on_gpu, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )


def train(make_trainer: Callable[[dict[str, Any], StepClock], Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run a trainer with a :class:`StepClock`; remove its LoRA layers from the shared model after.

    ``make_trainer`` gets the :func:`training_arguments` (in a temporary output directory) and the clock.
    """
    record: Record = {"unit": "samples/s", "ours": None, "baseline": None, "ratio": None, "peak_memory_gib": None}
    clock = StepClock(args.device)
    trainer = None
    with tempfile.TemporaryDirectory() as out, _out_of_memory_as_none(record, "ours"):
        trainer = make_trainer(training_arguments(args, out), clock)
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its metrics; stdout is for JSON
            trainer.train()
        record.update(ours=clock.samples_per_second(args.batch_size), peak_memory_gib=clock.peak_gib)
    if trainer is not None and hasattr(trainer.model, "unload"):
        trainer.model.unload()
    del trainer
    _reset_peak(args.device)
    return record


def stage_representation(model: PreTrainedModel, processor: Any, states: States, args: argparse.Namespace) -> Record:
    """LoRA steps of the actionability fine-tuning (``trl.SFTTrainer``)."""
    dataset = Dataset.from_list([
        actionability_example(s["image"], s["goal"], s["history"], s["action"], changed=i % 2 == 0)
        for i, s in enumerate(states)
    ])

    def make_trainer(training: dict[str, Any], clock: StepClock) -> RepresentationTrainer:
        config = RepresentationConfig(max_length=None, **training)
        return RepresentationTrainer(model, config, train_dataset=dataset, processing_class=processor,
                                     callbacks=[clock])

    return train(make_trainer, args)


def stage_actor(model: PreTrainedModel, processor: Any, states: States, args: argparse.Namespace) -> Record:
    """LoRA steps of the Best-of-N actor (its collator and weighted NLL) on logged actions."""
    dataset = Dataset.from_dict({
        "episode_id": [f"e{i}" for i in range(len(states))], "step_id": [0] * len(states),
        "goal": [s["goal"] for s in states], "history": [s["history"] for s in states],
        "image": [s["image"] for s in states], "action": [s["action"] for s in states],
        "trajectory_reward": [1.0] * len(states),
    })

    def make_trainer(training: dict[str, Any], clock: StepClock) -> BestOfNActorTrainer:
        config = BestOfNActorConfig(weighting="sft", anchor="logged", **training)
        return BestOfNActorTrainer(model, args=config, train_dataset=dataset, processing_class=processor,
                                   callbacks=[clock])

    return train(make_trainer, args)


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "features": stage_features, "generation": stage_generation,
    "representation": stage_representation, "actor": stage_actor,
}


def run_model(name: str, args: argparse.Namespace) -> None:
    """Build one model and print a JSON line per requested stage."""
    started = time.perf_counter()
    model, processor = build(name, args)
    inference_states = make_states(args.batch_size, args)
    training_states = make_states(args.batch_size * (args.steps + 1), args, seed=100)
    common = {
        "model": name, "hub_id": MODELS[name].hub_id, "device": args.device, "dtype": args.dtype,
        "layers": args.layers or None, "screen": "x".join(map(str, args.screen)),
        **sequence_sizes(processor, inference_states[0]), "batch_size": args.batch_size,
        "num_candidates": args.num_candidates, "activation_checkpointing": args.activation_checkpointing,
        "weights_gib": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, 2),
    }
    print(f"# {name}: built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for stage in (s for s in STAGES if s in args.stages):
        started = time.perf_counter()
        states = training_states if stage in ("representation", "actor") else inference_states
        record = RUNNERS[stage](model, processor, states, args)
        print(json.dumps({"benchmark": f"real_size/{stage}", **common, **record}), flush=True)
        print(f"# {name} {stage}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    del model
    _reset_peak(args.device)


def parse_screen(text: str) -> tuple[int, int]:
    """``"1080x2400"`` -> ``(1080, 2400)`` (width, height)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]).replace("%", "%%"),
    )
    parser.add_argument("--model", nargs="+", choices=list(MODELS), default=["qwen2-vl-2b", "qwen2.5-vl-3b"],
                        help="models to build (random weights, published architectures)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="e.g. cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="weights dtype")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to measure")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="states per batch (features, generation) and per training step (representation, actor)")
    parser.add_argument("--num-candidates", type=int, default=16, help="N candidate actions per state")
    parser.add_argument("--screen", type=parse_screen, default=(1080, 2400),
                        help="screenshot WIDTHxHEIGHT before resizing")
    parser.add_argument("--min-pixels", type=int, default=QWEN_MIN_PIXELS, help="image processor's min_pixels")
    parser.add_argument("--max-pixels", type=int, default=QWEN_MAX_PIXELS,
                        help="image processor's max_pixels (default: the Qwen processors' own, 12,845,056)")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="tokens per sampled candidate (BestOfNActorConfig.max_completion_length)")
    parser.add_argument("--steps", type=int, default=3, help="timed repeats / training steps after one warm-up")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute activations in backward in both training stages")
    parser.add_argument("--layers", type=int, default=0,
                        help="keep only this many text decoder layers and vision blocks (smoke runs; 0: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1 or args.num_candidates < 1:
        parser.error("--steps, --batch-size and --num-candidates must be >= 1")
    torch.set_num_threads(args.threads)
    for name in args.model:
        run_model(name, args)


if __name__ == "__main__":
    main()
