"""A run's output folder: where each stage's artifacts live, how to load them, and their manifests.

:class:`RunArtifacts` is the one place that knows the layout of ``output_dir`` (``base_actor/``,
``data/``, ``representation/``, ``critic/``, ``actor/<method>/seed<k>/``, ...); the pipeline, the
diagnosis script and the viewer all load through it.

Each finished stage output carries a manifest (``manifest.json``): the fingerprint of the
configuration it was made with (:func:`~digiq_trl.fingerprints.stage_fingerprint`, which also covers the
stage before it) and the sha256 of its files (weights, datasets, feature caches, adapters; not the
:data:`RUN_RECORDS`, whose timings differ from run to run). Before a stage is skipped, its manifest is checked: a
different fingerprint means the output is stale and the stage runs again (and so does every later
one); a file whose digest differs is a :class:`DamagedArtifactError` naming the stage, the file and
the command that removes the damaged output. The run records are listed too (by digest, apart from
the files, since their timings differ between runs), so a deleted ``eval_metrics.json`` is caught.
A manifest also keeps the content digests of the stage's inputs (:func:`content_digest`), so a run
can say that a dataset replaced at the same path is why a stage is recomputed.

Every VLM a run loads (base actor, feature backbone, actors to evaluate, the model behavior cloning
starts from) goes through :meth:`RunArtifacts.load_model`: :func:`~digiq_trl.models.loading.load_vlm` with the run's
``model_dtype``, ``attn_implementation`` and ``model_init_kwargs``, placed on this process's
accelerator by :func:`~digiq_trl.models.loading.on_process_device` (accelerate's ``PartialState().device``; nothing moves on
a CPU machine). The ``evaluate`` command and the viewer place what they load with the same helper.

Example:
    >>> from digiq_trl.artifacts import RunArtifacts
    >>> from digiq_trl.pipeline_config import DigiQPipelineConfig
    >>> artifacts = RunArtifacts(DigiQPipelineConfig(output_dir="outputs/run"))
    >>> artifacts.actor_path("digiq", 0).as_posix()
    'outputs/run/actor/digiq/seed0'
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .models.loading import load_vlm, on_process_device
from .pipeline_config import METHODS, DigiQPipelineConfig
from .staging import sha256_file
from .trainers.preparation_cache import PREPARATION_CACHE_DIR


MANIFEST = "manifest.json"
PREPARATION = "preparation"
"""Folder of an actor adapter holding its saved Best-of-N preparation."""
RUN_RECORDS = frozenset({"README.md", "training_args.bin", "metrics.json", "eval_metrics.json", "log_history.json",
                         "preparation_metrics.json"})
"""Files that record how a stage ran (wall-clock timings, paths, model cards) rather than what it
made: listed apart from the files in a manifest (``records``), so the same configuration gives the
same ``files`` while a deleted or changed record is still caught."""


class DamagedArtifactError(RuntimeError):
    """A stage output whose files no longer match its manifest (truncated, overwritten, deleted)."""


class MissingArtifactError(FileNotFoundError):
    """A stage output a later stage needs is not there (the stage was skipped or never ran)."""


class RunArtifacts:
    """Paths, loaders and manifests of one run's ``output_dir``."""

    def __init__(self, config: DigiQPipelineConfig) -> None:
        self.config = config
        self.root = Path(config.output_dir)
        self._extractor: Any = None

    # ------------------------------------------------------------------ paths
    def path(self, stage: str) -> Path:
        """The folder of one stage's output (``features`` keeps only its manifest there: the
        feature columns are cached next to the data)."""
        return self.root / stage

    def actor_path(self, method: str, seed: int) -> Path:
        """Where the adapter of ``method`` trained with ``seed`` goes."""
        return self.root / "actor" / method / f"seed{seed}"

    def preparation_path(self, method: str, seed: int) -> Path:
        """The saved Best-of-N preparation (candidates, advantages, targets; no images) of an adapter."""
        return self.actor_path(method, seed) / PREPARATION

    @property
    def preparation_cache(self) -> Path:
        """The actor stage's cache of Best-of-N preparation steps, shared by its methods and seeds."""
        return self.path("actor") / PREPARATION_CACHE_DIR

    def adapters(self) -> Iterator[tuple[str, int, Path]]:
        """``(method, seed, folder)`` of every trained adapter of the configured methods and seeds."""
        for method in METHODS:
            for seed in self.config.actor_seeds:
                folder = self.actor_path(method, seed)
                if (folder / "adapter_config.json").exists():
                    yield method, seed, folder

    @property
    def base_actor_path(self) -> str:
        """The behavior-cloned base actor's folder, or the given ``base_actor`` kept as it is."""
        cloned = self.config.bc_steps > 0
        return str(self.path("base_actor")) if cloned else str(self.config.base_actor)

    @property
    def feature_backbone_path(self) -> str:
        """The given ``representation_model``, else the fine-tuned representation model when stage 1
        ran, else the base actor."""
        if self.config.representation_model:
            return self.config.representation_model
        tuned = self.path("representation")
        return str(tuned) if (tuned / "config.json").exists() else self.base_actor_path

    @property
    def critic_source(self) -> str:
        """The given ``critic_model`` (a Hub id or path), else the run's ``critic/`` folder."""
        return self.config.critic_model or str(self.path("critic"))

    @property
    def has_critic(self) -> bool:
        """Whether a critic is given or was trained."""
        return bool(self.config.critic_model) or (self.path("critic") / "model.safetensors").exists()

    def backbone_reference(self) -> str:
        """How the critic's config names its feature backbone, so that whoever gets the critic finds
        it: the Hub id the representation model is pushed to, else the run's folder as a path
        relative to the critic's own (``../representation``), or a given base actor's own id."""
        backbone = Path(self.feature_backbone_path)
        if backbone.resolve().parent != self.root.resolve():
            return self.feature_backbone_path
        if self.config.push_to_hub and backbone.name == "representation":
            return str(self.config.hub_id("representation"))
        return f"../{backbone.name}"

    @property
    def dataset_hub_id(self) -> str | None:
        """The ``dataset`` option when it is a Hub dataset id (what the pushed cards name as their
        training data), else None: a local folder or the run's own collection has no Hub id."""
        from .trainers.model_cards import hub_repo_id

        return hub_repo_id(self.config.dataset)

    # ------------------------------------------------------------------ loaders
    def load_model(self, name_or_path: str) -> Any:
        """A VLM by Hub id, path or shipped name, loaded with the run's model options
        (:attr:`DigiQPipelineConfig.model_load_kwargs <digiq_trl.pipeline_config.DigiQPipelineConfig.model_load_kwargs>`)
        and on this process's accelerator: every stage loads its VLMs through here, so none is left
        on the CPU of a GPU machine and all honour ``model_dtype`` / ``attn_implementation`` /
        ``model_init_kwargs`` alike."""
        return load_vlm(name_or_path, **self.config.model_load_kwargs)

    def load_base_actor(self) -> tuple[Any, Any]:
        """A fresh copy of the base actor (:meth:`load_model`) and its processor."""
        if self.config.bc_steps > 0:
            self.require("base_actor", "config.json")
        return self.load_model(self.base_actor_path), self.base_processor()

    def base_processor(self) -> Any:
        """The base actor's processor, with the run's ``max_pixels`` / ``min_pixels``."""
        from .models.processing import load_processor

        return load_processor(self.base_actor_path, **self.config.processor_kwargs)

    def load_data(self) -> Any:
        """The train/test transitions of the data stage."""
        from datasets import load_from_disk

        self.require("data", "dataset_dict.json")
        return load_from_disk(str(self.path("data")))

    def extractor(self) -> Any:
        """The frozen feature extractor over the feature backbone (:meth:`load_model`), or over a
        given ``critic_model``'s own backbone, loaded once and shared by the features, critic, actor
        and evaluation stages (it is never trained)."""
        from .models.features import VLMFeatureExtractor
        from .models.processing import load_processor

        if self._extractor is None and self.config.critic_model:
            from .models.loading import process_device

            self._extractor = VLMFeatureExtractor.for_critic(self.load_critic().config, device=process_device())
        if self._extractor is None:
            backbone = self.feature_backbone_path
            self._extractor = VLMFeatureExtractor(
                self.load_model(backbone), load_processor(backbone, **self.config.processor_kwargs),
                layer=self.config.feature_layer, pooling=self.config.feature_pooling, model_id=backbone,
                feature_input=self.config.feature_input,
            )
        return self._extractor

    def scorer(self) -> Any:
        """The trained critic with its feature extractor and text tokenizer
        (:class:`~digiq_trl.models.scoring.CriticScorer`)."""
        from .models.scoring import CriticScorer

        return CriticScorer(self.load_critic(), self.extractor())

    def load_critic(self) -> Any:
        """The trained critic, in eval mode, on this process's accelerator (beside its features)."""
        from .models.critic import DigiQCritic

        if not self.config.critic_model:
            self.require("critic", "model.safetensors")
        return on_process_device(DigiQCritic.from_pretrained(self.critic_source).eval())

    def load_actor(self, adapter: Path | None = None) -> tuple[Any, Any]:
        """The base actor, with ``adapter`` merged into its weights when given (LoRA-free decoding)."""
        from peft import PeftModel

        model, processor = self.load_base_actor()
        if adapter is not None:
            if not (adapter / "adapter_config.json").exists():
                raise MissingArtifactError(f"stage actor: no adapter in {adapter}; rerun the actor stage")
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        return model, processor

    def require(self, stage: str, marker: str) -> None:
        """Raise a :class:`MissingArtifactError` when ``stage``'s output lacks ``marker``."""
        if not (self.path(stage) / marker).exists():
            raise MissingArtifactError(
                f"stage {stage}: {self.path(stage) / marker} is missing; run the {stage} stage "
                f"(remove it from skip_stages) or point the run at an output_dir that has it"
            )

    # ------------------------------------------------------------------ manifests
    def write_manifest(self, folder: Path, fingerprint: str, files: Iterable[Path] | None = None,
                       inputs: dict[str, str] | None = None, upstream: str = "") -> None:
        """Record ``fingerprint``, the sha256 of ``files`` (default: every file under ``folder`` but the
        manifest and the :data:`RUN_RECORDS`) and of the run records in ``folder``, the content
        digests of the stage's ``inputs`` and the ``upstream`` stage's fingerprint (so that a rerun can
        say why it recomputes) in ``folder/manifest.json``, written atomically (a crash leaves the old
        manifest or none)."""
        listed = sorted(files) if files is not None else sorted(
            p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and p.name not in RUN_RECORDS
        )
        records = sorted(p for p in folder.rglob("*") if p.is_file() and p.name in RUN_RECORDS)
        manifest = {"fingerprint": fingerprint, "files": self._digests(listed), "records": self._digests(records),
                    "inputs": inputs or {}, "upstream": upstream}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        tmp.replace(folder / MANIFEST)

    def _digests(self, paths: Iterable[Path]) -> dict[str, str]:
        return {os.path.relpath(p, self.root): sha256_file(p) for p in paths}

    def is_current(self, stage: str, folder: Path, fingerprint: str) -> bool:
        """Whether ``folder`` holds a finished output made with ``fingerprint`` (its files and run
        records verified).

        Raises:
            DamagedArtifactError: the manifest matches but a file is missing or changed; the message
                names the file and the command that removes the stage's output, after which a rerun
                recomputes it.
        """
        recorded = self.manifest(folder)
        if recorded.get("fingerprint") != fingerprint:
            return False
        listed = {**recorded["files"], **recorded.get("records", {})}
        for name, digest in listed.items():
            path = self.root / name
            if not path.is_file() or sha256_file(path) != digest:
                state = "is missing" if not path.is_file() else "does not match its manifest (sha256 differs)"
                outside = sorted({str(self.root / n) for n in listed if not (self.root / n).is_relative_to(folder)})
                command = shlex.join(["rm", "-rf", str(folder), *outside])
                raise DamagedArtifactError(
                    f"stage {stage}: {path} {state}; the output is damaged. Remove it with `{command}` and rerun: "
                    f"the {stage} stage is recomputed."
                )
        return True

    def manifest(self, folder: Path) -> dict[str, Any]:
        """``folder``'s manifest ({} when there is none).

        Raises:
            DamagedArtifactError: the manifest is not a readable JSON object.
        """
        manifest = folder / MANIFEST
        if not manifest.exists():
            return {}
        try:
            recorded = json.loads(manifest.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            recorded = error
        if not isinstance(recorded, dict) or not isinstance(recorded.get("files", {}), dict):
            raise DamagedArtifactError(f"{manifest} is unreadable ({recorded}); the output is damaged. Remove it "
                                       f"with `{shlex.join(['rm', '-rf', str(folder)])}` and rerun.")
        return recorded

    def fingerprint(self, folder: Path) -> str:
        """The fingerprint recorded in ``folder``'s manifest ("" when there is none)."""
        return self.manifest(folder).get("fingerprint", "")


def content_digest(reference: str) -> str:
    """What a ``dataset`` or ``base_actor`` holds, as a digest: for a local folder the sizes and
    sha256 of its files (not ``datasets`` cache files), for a Hub id its resolved revision (the
    cached snapshot's offline), else the id itself. A stage fingerprint that includes it changes
    when new content is put at the same path."""
    from .models.pretrained import resolve_pretrained

    path = Path(resolve_pretrained(reference)).expanduser()
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("cache-", ".")))
        listing = [(p.relative_to(path).as_posix(), p.stat().st_size, sha256_file(p)) for p in files]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return _hub_revision(reference)


def _hub_revision(repo_id: str) -> str:
    """``repo_id@<commit>`` of a Hub repository (model or dataset), or ``repo_id`` when it cannot be
    resolved."""
    from huggingface_hub import HfApi, constants, snapshot_download

    for repo_type in ("model", "dataset"):
        try:
            if constants.HF_HUB_OFFLINE:
                return f"{repo_id}@{Path(snapshot_download(repo_id, repo_type=repo_type, local_files_only=True)).name}"
            return f"{repo_id}@{HfApi().repo_info(repo_id, repo_type=repo_type).sha}"
        except Exception:  # noqa: BLE001 (not this type, not cached, no network: try the next, else the id)
            continue
    return repo_id
