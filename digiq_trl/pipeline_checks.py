"""The allowed values of every numeric, list and path option of a run, checked before any work.

:data:`OPTION_RANGES` is the one table of what each numeric field of
:class:`~digiq_trl.pipeline_config.DigiQPipelineConfig` accepts; :func:`check_options` walks it
(and the list and path options) when the config is built, so the Python API and the command line
refuse a mistyped value the same way: with one :class:`InvalidOptionError` line naming the option,
the value and what is allowed, before anything is written. A test walks every numeric field with a
value outside its range.

Example:
    >>> from digiq_trl.pipeline_config import DigiQPipelineConfig
    >>> DigiQPipelineConfig(critic_steps=-1)
    Traceback (most recent call last):
    ...
    digiq_trl.pipeline_checks.InvalidOptionError: --critic_steps: got -1; allowed: an integer >= 1
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .staging import DATASET_MARKERS


if TYPE_CHECKING:
    from .pipeline_config import DigiQPipelineConfig


class InvalidOptionError(ValueError):
    """An option whose value is outside what it allows (the message names the option)."""


@dataclass(frozen=True)
class Range:
    """The numbers an option accepts: ``low``/``high`` bounds (None: unbounded), each inclusive
    unless ``*_open``; always finite; ``optional`` also accepts None."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    nonzero: bool = False

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is in the range (booleans are not numbers here)."""
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (below or above or (self.nonzero and value == 0))

    def describe(self, integer: bool) -> str:
        """What the range allows, in words (``"an integer >= 1"``)."""
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        if self.nonzero:
            bounds.append("!= 0")
        text = f"{'an integer' if integer else 'a finite number'} {' and '.join(bounds)}".rstrip()
        return f"{text}, or null" if self.optional else text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


COUNT = Range(1)
"""Steps, batch sizes, episodes and the like: at least one (TrainingArguments would read -1 or 0 steps
as "train for epochs")."""
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
PROBABILITY = Range(0, 1)

OPTION_RANGES: dict[str, Range] = {
    "seed": NON_NEGATIVE,
    "num_threads": NON_NEGATIVE,  # 0: the cores divided among the processes
    "max_pixels": Range(1, optional=True),
    "min_pixels": Range(1, optional=True),
    "interruption_probability": Range(0, 1, optional=True),
    "bc_layers": COUNT,
    "bc_heads": COUNT,
    "bc_episodes": COUNT,
    "bc_noise": PROBABILITY,
    "bc_steps": NON_NEGATIVE,  # 0: keep the given base_actor as it is
    "bc_learning_rate": POSITIVE,
    "bc_batch_size": COUNT,
    "bc_gradient_accumulation_steps": COUNT,
    "collect_episodes": COUNT,
    "behavior_temperature": NON_NEGATIVE,  # 0: greedy
    "gamma": Range(0, 1, low_open=True),
    "test_size": Range(0, 1, low_open=True, high_open=True),
    "representation_steps": COUNT,
    "representation_learning_rate": POSITIVE,
    "representation_batch_size": COUNT,
    "representation_gradient_accumulation_steps": COUNT,
    "feature_layer": Range(optional=True, nonzero=True),  # 1-based, negative from the end; null: the middle
    "critic_hidden_size": COUNT,
    "critic_steps": COUNT,
    "critic_learning_rate": POSITIVE,
    "critic_batch_size": COUNT,
    "critic_gradient_accumulation_steps": COUNT,
    "critic_max_grad_norm": NON_NEGATIVE,  # 0: no clipping
    "critic_save_steps": COUNT,
    "representation_save_steps": COUNT,
    "actor_save_steps": COUNT,
    "ranking_alternatives": COUNT,
    "critic_conservative_weight": NON_NEGATIVE,
    "num_candidates": COUNT,
    "candidate_temperature": POSITIVE,
    "min_candidate_count": COUNT,
    "candidate_resamples": NON_NEGATIVE,
    "advantage_threshold": Range(),
    "actor_steps": COUNT,
    "actor_learning_rate": POSITIVE,
    "actor_batch_size": COUNT,
    "actor_gradient_accumulation_steps": COUNT,
    "actor_max_grad_norm": NON_NEGATIVE,  # 0: no clipping
    "actor_max_states": Range(1, optional=True),
    "anchor_weight": NON_NEGATIVE,
    "eval_episodes": COUNT,
    "eval_temperature": NON_NEGATIVE,  # 0: greedy
    "rollout_batch_size": COUNT,
    "probe_states": COUNT,
    "ddp_timeout": COUNT,
}
"""What each numeric option of the pipeline config accepts (every int and float field is listed)."""

CHOICES: dict[str, tuple[str, ...]] = {
    "suite": ("general", "webshop"),
    "evaluation": ("simulator", "offline"),
    "layout": ("fixed", "random"),
    "eval_goals": ("random", "first"),
    "feature_pooling": ("mean", "last"),
    "critic_v_target_combine": ("min", "independent"),
    "candidate_source": ("policy", "dataset", "both"),
    "anchor": ("greedy", "logged", "none"),
    "model_dtype": ("auto", "bfloat16", "float16", "float32"),
    "attn_implementation": ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"),
}
"""Options that take one of a few words (others, such as ``phone``, are checked against the tables
they index)."""
NULLABLE_CHOICES = frozenset({"model_dtype", "attn_implementation"})
"""Options of :data:`CHOICES` that also take null (transformers' default)."""
RESERVED_INIT_KWARGS = ("dtype", "torch_dtype", "attn_implementation")
"""``from_pretrained`` arguments with options of their own, refused in ``model_init_kwargs`` (one way to set each)."""

MODEL_SOURCES = ("base_actor", "representation_model", "critic_model")
"""Options naming a model by Hub id or path (checked like ``dataset``, their content fingerprinted)."""

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""A Hub repository id: ``name`` or ``owner/name``."""


def fail(name: str, value: Any, allowed: str) -> InvalidOptionError:
    """The error for option ``name``: one line with the value given and what is allowed."""
    return InvalidOptionError(f"--{name}: got {value!r}; allowed: {allowed}")


def check_options(config: DigiQPipelineConfig) -> None:
    """Refuse any option of ``config`` outside what it allows (one :class:`InvalidOptionError`)."""
    integers = {f.name for f in fields(config) if "int" in str(f.type) and "list" not in str(f.type)}
    for name, allowed in OPTION_RANGES.items():
        value = getattr(config, name)
        if not allowed.allows(value) or (name in integers and value is not None and not isinstance(value, int)):
            raise fail(name, value, allowed.describe(name in integers))
    for name, words in CHOICES.items():
        value, nullable = getattr(config, name), name in NULLABLE_CHOICES
        if value not in words and not (nullable and value is None):
            raise fail(name, value, f"one of {', '.join(words)}{', or null' if nullable else ''}")
    _check_relations(config)
    for name in ("actor_seeds", "eval_seeds"):
        _check_seeds(name, getattr(config, name))
    _check_clamp(config.actor_token_probability_clamp)
    if config.dataset is not None:
        _check_source("dataset", config.dataset, DATASET_MARKERS, "a folder written by save_to_disk or a Hub dataset id")
    for name in MODEL_SOURCES:
        if getattr(config, name) is not None:
            _check_source(name, getattr(config, name), ("config.json",), "a model folder or a Hub model id")


def _check_relations(config: DigiQPipelineConfig) -> None:
    """Options whose range depends on another option."""
    if config.min_candidate_count > config.num_candidates:
        raise fail("min_candidate_count", config.min_candidate_count,
                   f"an integer from 1 to num_candidates ({config.num_candidates})")
    if None not in (config.min_pixels, config.max_pixels) and config.min_pixels > config.max_pixels:
        raise fail("min_pixels", config.min_pixels, f"at most max_pixels ({config.max_pixels})")
    reserved = sorted(set(config.model_init_kwargs or {}) & set(RESERVED_INIT_KWARGS))
    if reserved:
        raise fail("model_init_kwargs", config.model_init_kwargs, f"from_pretrained arguments other than {reserved} "
                   "(set them with model_dtype / attn_implementation)")


def _check_seeds(name: str, seeds: Any) -> None:
    """A non-empty list of distinct integers >= 0."""
    valid = (isinstance(seeds, list) and seeds and len(set(seeds)) == len(seeds)
             and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds))
    if not valid:
        raise fail(name, seeds, "a non-empty list of distinct integers >= 0")


def _check_clamp(clamp: Any) -> None:
    """None, or ``[low, high]`` with 0 <= low < high <= 1."""
    if clamp is None:
        return
    if not (isinstance(clamp, list) and len(clamp) == 2 and all(PROBABILITY.allows(v) for v in clamp)
            and clamp[0] < clamp[1]):
        raise fail("actor_token_probability_clamp", clamp, "two numbers low high with 0 <= low < high <= 1, or null")


def _check_source(name: str, reference: str, markers: tuple[str, ...], allowed: str) -> None:
    """A local folder holding one of ``markers``, or (when no such path exists) a Hub id."""
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir() or not any((path / marker).exists() for marker in markers):
            raise fail(name, reference, f"{allowed}; {path} is {'a file' if not path.is_dir() else 'neither'}")
        return
    looks_local = reference.startswith((".", "/", "~")) or reference.count("/") > 1 or "\\" in reference
    if looks_local or not HUB_ID.fullmatch(reference):
        raise fail(name, reference, f"{allowed}; {path} does not exist")


def check_hub_access(config: DigiQPipelineConfig) -> None:
    """Refuse, before any work, what would fail on the Hub later: a ``dataset`` or model
    (:data:`MODEL_SOURCES`) Hub id that cannot be read (offline, one missing from the local Hub cache; online, one the Hub does
    not have) and a ``push_to_hub`` that cannot push (a placeholder ``hub_model_prefix``, the Hub
    offline, no login). Run when a run starts, not when a config is built, so that configs naming
    Hub ids can be written and checked offline."""
    for name, repo_type in (("dataset", "dataset"), *((name, "model") for name in MODEL_SOURCES)):
        reference = getattr(config, name)
        if reference is not None and not Path(reference).expanduser().exists():
            missing = _hub_repo_missing(reference, repo_type)
            if missing:
                raise fail(name, reference, f"a local folder or a readable Hub id; no folder {reference} exists and "
                           f"{missing}")
    if config.push_to_hub:
        _check_push(config.hub_model_prefix)


PLACEHOLDER_OWNERS = ("your-user", "you", "<you>", "user")
"""Hub namespaces that example configs use as placeholders."""


def _check_push(prefix: str | None) -> None:
    """A prefix in the user's own namespace, and a Hub that can be written."""
    from huggingface_hub import HfApi, constants

    owner = (prefix or "").split("/")[0]
    if owner in PLACEHOLDER_OWNERS or "/" not in (prefix or ""):
        raise fail("hub_model_prefix", prefix, "<your Hub user or organization>/<name> with push_to_hub (e.g. "
                   "'my-user/digiq-general'), or set push_to_hub false")
    if constants.HF_HUB_OFFLINE:
        raise fail("push_to_hub", True, "false while the Hub is offline (HF_HUB_OFFLINE=1)")
    try:
        HfApi().whoami()
    except Exception as error:  # noqa: BLE001 (not logged in, no network: the push would fail at the end)
        raise fail("push_to_hub", True, f"false, or a Hub login first (`hf auth login` or HF_TOKEN): {error}") from None


def _hub_repo_missing(repo_id: str, repo_type: str) -> str:
    """Why the Hub repository ``repo_id`` cannot be read ("" when it can, or when that cannot be
    told): offline, it must be in the local Hub cache; online, it must exist."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from .models.pretrained import SHIPPED_MODELS

    if repo_id in SHIPPED_MODELS:
        return ""
    if constants.HF_HUB_OFFLINE:
        try:
            snapshot_download(repo_id, repo_type=repo_type, local_files_only=True)
        except (LocalEntryNotFoundError, OSError, ValueError):
            return f"the Hub is offline (HF_HUB_OFFLINE=1) with no cached copy of {repo_type} {repo_id}"
        return ""
    try:
        return "" if HfApi().repo_exists(repo_id, repo_type=repo_type) else f"the Hub has no {repo_type} {repo_id}"
    except Exception:  # noqa: BLE001 (no network, a proxy, a timeout: the load itself will say why)
        return ""
