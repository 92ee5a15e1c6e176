"""Tiny vision-language models that exist without the Hub: the embedded default's actor, and tests.

Real runs use real checkpoints (Hub ids). Offline, on a CPU, the library builds small random-init
VLMs from configs instead (the pipeline's default base actor is one), with a BPE tokenizer trained
in memory on the text these models ever see: the prompt of :mod:`digiq_trl.prompts`, AutoUI action
strings and the AitW goals shipped in ``digiq_trl/envs/assets``. Four families, all loadable by
``AutoModelForImageTextToText``:

* :func:`tiny_qwen2_vl`: Qwen2-VL (the family the library targets first), with the
  :class:`~digiq_trl.models.processing.Qwen2VLImageTextProcessor` (no torchvision needed).
* :func:`tiny_qwen2_5_vl` and :func:`tiny_qwen3_vl` (both :func:`tiny_qwen_vl`): Qwen2.5-VL and
  Qwen3-VL with the same tokenizer and processor, so every path that takes Qwen2-VL is tested on
  them too.
* :func:`tiny_llava`: LLaVA with a tiny CLIP vision tower and a tiny Llama.

The tokenizer keeps words whole-or-split the same way wherever they occur (words are pre-split from
spaces, quotes and punctuation; digits are single tokens), so typing a goal's words is a copy of the
goal's tokens, and coordinates are digit by digit.

Example:
    >>> from digiq_trl.models.tiny import tiny_qwen2_vl
    >>> model, processor = tiny_qwen2_vl()
    >>> model.num_parameters() < 2_000_000
    True
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.utils.chat_template_utils import render_jinja_template

from ..actions import ActionType, DeviceAction, format_action, format_history
from ..prompts import ACTION_FORMAT, build_messages
from .processing import Qwen2VLImageTextProcessor


PAD_TOKEN = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN)
"""Special tokens of the tiny tokenizer (Qwen2-VL's names; LLaVA uses the same image token)."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for part in parts %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{% for part in parts %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""A minimal ChatML template. The assistant answer and its ``<|im_end|>`` sit in a
``{% generation %}`` block, so ``assistant_only_loss`` labels exactly the action and the stop token
(behavior cloning does not need it: it trains on prompt-completion rows)."""

SCREEN_SIZE = (224, 112)
"""Default screenshot size ``(height, width)``: portrait, 32 Qwen2-VL image tokens."""

_PRE_SPLIT = Regex(r"[A-Za-z_]+|[0-9]")
"""Words (letters and underscores) and single digits become their own pre-tokens; the spaces and
punctuation between them merge among themselves (``": "[`` is one token)."""


def action_scaffold_tokens() -> list[str]:
    """The fixed text between the variable parts of an AutoUI action string, as whole tokens.

    Derived from :func:`~digiq_trl.actions.format_action`, so they follow its format: the prefix up
    to the action type, the text around the two points, and the whole no-point middle of
    BACK/HOME/ENTER/TYPE/status actions. An action then costs a few tokens for its fixed text plus
    its variable parts (digits of the points, typed words), instead of one token per punctuation
    mark and key of the scaffold: shorter sequences train faster.
    """
    no_points = format_action(DeviceAction.type_text(""))
    prefix, middle = no_points.split(ActionType.TYPE.name, 1)
    tap = format_action(DeviceAction.tap(0.5, 0.5))
    around_points = tap[len(prefix) + len(ActionType.DUAL_POINT.name) : -1].split("0.5, 0.5")
    return [prefix, middle[:-1], *around_points]


def _goals() -> list[str]:
    """The AitW goals shipped with the package (all suites and splits)."""
    assets = resources.files("digiq_trl") / "envs" / "assets"
    goals: list[str] = []
    for path in sorted(assets.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".txt"):
            goals.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return goals


def _random_point(rng: random.Random) -> tuple[float, float]:
    """A normalized point written with 2 to 4 decimals."""
    return (round(rng.random(), rng.choice([2, 3, 4])), round(rng.random(), rng.choice([2, 3, 4])))


def _random_action(rng: random.Random, goals: list[str]) -> DeviceAction:
    """One action of any type; TYPE texts are goals or runs of goal words (what agents type)."""
    kind = rng.choice(["tap", "tap", "swipe", "type", "press"])
    if kind == "tap":
        return DeviceAction.tap(*_random_point(rng))
    if kind == "swipe":
        return DeviceAction.swipe(_random_point(rng), _random_point(rng))
    if kind == "type":
        words = rng.choice(goals).split()
        start = rng.randrange(len(words))
        return DeviceAction.type_text(" ".join(words[start : start + rng.randint(1, 5)]))
    return DeviceAction.press(
        rng.choice([t for t in ActionType if t not in (ActionType.DUAL_POINT, ActionType.TYPE)])
    )


def tokenizer_corpus(num_examples: int = 4000, seed: int = 0) -> Iterator[str]:
    """Text the tiny tokenizer is trained on: rendered training conversations and the goals.

    Each example is the chat template applied to :func:`~digiq_trl.prompts.build_messages` with a
    goal, a random history and a random action, so the template, the history format and the action
    format all shape the merges. The prompt's fixed action-format sentence is left out (it becomes
    one added token): repeated in every example, it would take the merges the goals' words need.
    """
    rng = random.Random(seed)
    goals = _goals()
    yield from goals
    for _ in range(num_examples):
        history = format_history([_random_action(rng, goals) for _ in range(rng.randint(0, 4))])
        action = format_action(_random_action(rng, goals))
        messages = build_messages(rng.choice(goals), history, action)
        yield render_jinja_template([messages], chat_template=CHAT_TEMPLATE)[0][0].replace(ACTION_FORMAT, "")


@lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    """Train the BPE once per vocabulary size and process, cached as JSON (every model built after
    the first reuses it)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(_PRE_SPLIT, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    scaffold = [ACTION_FORMAT, *action_scaffold_tokens()]  # the prompt's fixed format sentence: one token
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(scaffold),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in scaffold])
    return tokenizer.to_str()


def tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory for the tiny models (no Hub, no files).

    Args:
        vocab_size: target vocabulary size, special tokens and the 256 byte symbols included.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _set_generation_defaults(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> None:
    """Stop at ``<|im_end|>``, pad with the pad token, decode greedily by default."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False


def _default_mrope_section(head_dim: int) -> tuple[int, int, int]:
    """A quarter of the rotary pairs for time, the rest split between height and width."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return (temporal, height, half - temporal - height)


def _text_settings(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int, num_hidden_layers: int, num_attention_heads: int
) -> dict[str, Any]:
    """The text decoder settings both tiny VLMs share: the tokenizer's vocabulary and special
    tokens, an MLP twice the width, no grouped-query sharing, no BOS token."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=2048,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _checked_mrope_section(
    mrope_section: tuple[int, int, int] | None, head_dim: int, interleaved: bool = False
) -> tuple[int, int, int]:
    """``mrope_section``, or the default split of ``head_dim``, checked against it.

    The three parts (temporal, height, width) must cover the ``head_dim / 2`` rotary pairs. Qwen3-VL
    interleaves them (pair ``i`` is height when ``i % 3 == 1``, width when ``i % 3 == 2``, within the
    first ``3 * section`` pairs), so there the height and width parts must also fit three times.
    Defaults: Qwen2-VL's contiguous split (:func:`_default_mrope_section`), and Qwen3-VL's
    ``(24, 20, 20)`` of 64 pairs scaled to ``head_dim`` (height and width 5/16 of the pairs each).
    """
    half = head_dim // 2
    if mrope_section is None:
        spatial = half * 5 // 16
        mrope_section = (half - 2 * spatial, spatial, spatial) if interleaved else _default_mrope_section(head_dim)
    if sum(mrope_section) != half:
        raise ValueError(f"mrope_section {mrope_section} must sum to head_dim / 2 = {half}")
    if interleaved and 3 * max(mrope_section[1:]) > half:
        raise ValueError(f"interleaved mrope_section {mrope_section}: height and width must be <= head_dim / 6")
    return tuple(mrope_section)


def _vision_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The ids of the image, video and vision start/end tokens, as the Qwen-VL configs name them."""
    return dict(
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_start_token_id=tokenizer.convert_tokens_to_ids(VISION_START),
        vision_end_token_id=tokenizer.convert_tokens_to_ids(VISION_END),
    )


QWEN3_VL_SCREEN_SIZE = (256, 128)
"""Default screenshot size of the tiny Qwen3-VL: its 16-pixel patches give 32 image tokens, as
:data:`SCREEN_SIZE` does with the 14-pixel patches of Qwen2-VL and Qwen2.5-VL."""

_QWEN_VL_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
}

QWEN_VL_MODEL_TYPES: tuple[str, ...] = tuple(_QWEN_VL_CLASSES)
"""The Qwen-VL families :func:`tiny_qwen_vl` builds, by ``model_type``."""


def _qwen_text_config(
    model_type: str,
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    mrope_section: tuple[int, int, int] | None,
) -> dict[str, Any]:
    """A Qwen-VL text decoder config: :func:`_text_settings` with multimodal RoPE; Qwen3-VL's
    interleaved, with its head dim set (its config defaults it to 128 instead of deriving it)."""
    head_dim = hidden_size // num_attention_heads
    interleaved = model_type == "qwen3_vl"
    section = _checked_mrope_section(mrope_section, head_dim, interleaved=interleaved)
    settings = _text_settings(tokenizer, hidden_size, num_hidden_layers, num_attention_heads)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(section)}
    if interleaved:
        settings["head_dim"] = head_dim
        rope["mrope_interleaved"] = True
    return dict(**settings, rope_parameters=rope)


def _qwen_vision_config(
    model_type: str, depth: int, width: int, num_heads: int, out_hidden_size: int
) -> dict[str, Any]:
    """A Qwen-VL vision tower config (2x2 patch merge, 2-frame temporal patches) of each family:
    Qwen2-VL's plain ViT (patch 14), Qwen2.5-VL's with window attention of 56 pixels and full
    attention in the last block, Qwen3-VL's with 16-pixel patches, a learned 8x8 position grid
    resampled to each image, and DeepStack (every block but the last feeds the image positions of the
    first decoder layers)."""
    shared = dict(depth=depth, num_heads=num_heads, spatial_merge_size=2, temporal_patch_size=2)
    if model_type == "qwen2_vl":
        return dict(shared, embed_dim=width, hidden_size=out_hidden_size, mlp_ratio=2, patch_size=14)
    shared.update(hidden_size=width, intermediate_size=2 * width, out_hidden_size=out_hidden_size)
    if model_type == "qwen2_5_vl":
        return dict(shared, patch_size=14, window_size=56, fullatt_block_indexes=[depth - 1])
    return dict(shared, patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=list(range(depth - 1)))


def tiny_qwen_vl(
    model_type: str = "qwen2_vl",
    vocab_size: int = 600,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    mrope_section: tuple[int, int, int] | None = None,
    vision_depth: int = 2,
    vision_hidden_size: int = 64,
    vision_num_heads: int = 2,
    screen_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, Qwen2VLImageTextProcessor]:
    """A random-init Qwen2-VL, Qwen2.5-VL or Qwen3-VL (under 1M parameters by default) and its
    processor, built offline from the family's own config classes.

    The three families share the tokenizer, the chat template and the processor
    (:class:`~digiq_trl.models.processing.Qwen2VLImageTextProcessor`: Qwen3-VL's processor gives the
    same image inputs as Qwen2-VL's), so every path that takes one is tested on all three. Qwen3-VL
    brings what sets it apart: interleaved M-RoPE, 16-pixel patches and DeepStack.

    Args:
        model_type: ``"qwen2_vl"``, ``"qwen2_5_vl"`` or ``"qwen3_vl"`` (:data:`QWEN_VL_MODEL_TYPES`).
        vocab_size: tokenizer and embedding size.
        hidden_size: text hidden size; the head dim is ``hidden_size // num_attention_heads``.
        num_hidden_layers: text decoder layers.
        num_attention_heads: text attention heads (no grouped-query sharing).
        mrope_section: multimodal RoPE split (temporal, height, width) of half a head; sums to
            head_dim / 2. Default: a quarter temporal, the rest split evenly ((8, 12, 12) for head_dim 64);
            for Qwen3-VL, whose split interleaves (height and width at most head_dim / 6), its
            ``(24, 20, 20)`` of 64 pairs scaled ((12, 10, 10) for head_dim 64).
        vision_depth: vision transformer blocks.
        vision_hidden_size: vision transformer width.
        vision_num_heads: vision attention heads.
        screen_size: ``(height, width)`` whose pixel count every image is resized to; default
            :data:`SCREEN_SIZE` (patch 14) or :data:`QWEN3_VL_SCREEN_SIZE` (patch 16), 32 image tokens.
        seed: seed of the weight initialization.
    """
    if model_type not in _QWEN_VL_CLASSES:
        raise ValueError(f"model_type must be one of {QWEN_VL_MODEL_TYPES}, got {model_type!r}")
    config_class, model_class = _QWEN_VL_CLASSES[model_type]
    tokenizer = tiny_tokenizer(vocab_size)
    vision = _qwen_vision_config(model_type, vision_depth, vision_hidden_size, vision_num_heads, hidden_size)
    config = config_class(
        text_config=_qwen_text_config(
            model_type, tokenizer, hidden_size, num_hidden_layers, num_attention_heads, mrope_section
        ),
        vision_config=vision,
        **_vision_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = model_class(config)
    _set_generation_defaults(model, tokenizer)
    height, width = screen_size or (SCREEN_SIZE if vision["patch_size"] == 14 else QWEN3_VL_SCREEN_SIZE)
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": height * width, "longest_edge": height * width}, patch_size=vision["patch_size"],
        merge_size=2, temporal_patch_size=2,
    )
    processor = Qwen2VLImageTextProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)
    return model, processor


def tiny_qwen2_vl(
    *, vision_embed_dim: int = 64, **sizes: Any
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLImageTextProcessor]:
    """A random-init Qwen2-VL (~0.8M parameters by default) and its processor, built offline:
    :func:`tiny_qwen_vl` for ``"qwen2_vl"``, whose arguments ``sizes`` are (224x112 screens give 32
    image tokens).

    Args:
        vision_embed_dim: vision transformer width (Qwen2-VL's config calls it ``embed_dim``).
        **sizes: the other arguments of :func:`tiny_qwen_vl` (``hidden_size``, ``num_hidden_layers``,
            ``mrope_section``, ``seed``, ...).
    """
    return tiny_qwen_vl("qwen2_vl", vision_hidden_size=vision_embed_dim, **sizes)


def tiny_qwen2_5_vl(**sizes: Any) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2VLImageTextProcessor]:
    """A random-init Qwen2.5-VL and its processor: :func:`tiny_qwen_vl` for ``"qwen2_5_vl"``."""
    return tiny_qwen_vl("qwen2_5_vl", **sizes)


def tiny_qwen3_vl(**sizes: Any) -> tuple[Qwen3VLForConditionalGeneration, Qwen2VLImageTextProcessor]:
    """A random-init Qwen3-VL and its processor: :func:`tiny_qwen_vl` for ``"qwen3_vl"``."""
    return tiny_qwen_vl("qwen3_vl", **sizes)


def tiny_llava(
    vocab_size: int = 600,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    vision_hidden_size: int = 64,
    vision_layers: int = 2,
    image_size: int = 112,
    patch_size: int = 14,
    seed: int = 0,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A random-init LLaVA (tiny CLIP vision tower + tiny Llama) and its processor, built offline.

    Screenshots are resized to a square ``image_size`` (CLIP has fixed position embeddings); the
    default 112 with patch 14 gives 64 image tokens.

    Args:
        vocab_size: tokenizer and embedding size.
        hidden_size: Llama hidden size.
        num_hidden_layers: Llama layers.
        num_attention_heads: Llama attention heads.
        vision_hidden_size: CLIP vision width.
        vision_layers: CLIP vision layers.
        image_size: side of the square image the vision tower sees.
        patch_size: CLIP patch size.
        seed: seed of the weight initialization.
    """
    tokenizer = tiny_tokenizer(vocab_size)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=vision_hidden_size,
        ),
        text_config=LlamaConfig(**_text_settings(tokenizer, hidden_size, num_hidden_layers, num_attention_heads)),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    _set_generation_defaults(model, tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size}, do_center_crop=False
    )
    processor = LlavaProcessor(
        image_processor,
        tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    return model, processor
