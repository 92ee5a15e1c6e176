"""A run's output folder: where each stage's artifacts live, how to load them, and their manifests.

:class:`RunArtifacts` is the one place that knows the layout of ``output_dir`` (``base_actor/``,
``data/``, ``representation/``, ``critic/``, ``actor/<method>/seed<k>/``, ...); the pipeline, the
diagnosis script and the viewer all load through it.

Each finished stage output carries a manifest (``manifest.json``): the fingerprint of the
configuration it was made with (:meth:`DigiQPipelineConfig.stage_fingerprint`, which also covers the
stage before it) and the sha256 of its files (weights, datasets, feature caches, adapters; not the
:data:`RUN_RECORDS`, whose timings differ from run to run). Before a stage is skipped, its manifest is checked: a
different fingerprint means the output is stale and the stage runs again (and so does every later
one); a file whose digest differs is a :class:`DamagedArtifactError` naming the stage and the file.

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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .pipeline_config import METHODS, DigiQPipelineConfig


MANIFEST = "manifest.json"
RUN_RECORDS = frozenset({"README.md", "training_args.bin", "metrics.json", "eval_metrics.json", "log_history.json",
                         "preparation_metrics.json"})
"""Files that record how a stage ran (wall-clock timings, paths, model cards) rather than what it
made: left out of manifests, so the same configuration gives the same manifest."""


class DamagedArtifactError(RuntimeError):
    """A stage output whose files no longer match its manifest (truncated, overwritten, deleted)."""


class MissingArtifactError(FileNotFoundError):
    """A stage output a later stage needs is not there (the stage was skipped or never ran)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
        """The fine-tuned representation model when stage 1 ran, else the base actor."""
        tuned = self.path("representation")
        return str(tuned) if (tuned / "config.json").exists() else self.base_actor_path

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

    # ------------------------------------------------------------------ loaders
    def load_base_actor(self) -> tuple[Any, Any]:
        """A fresh copy of the base actor and its processor."""
        from transformers import AutoModelForImageTextToText

        from .models.pretrained import resolve_pretrained

        if self.config.bc_steps > 0:
            self.require("base_actor", "config.json")
        return AutoModelForImageTextToText.from_pretrained(resolve_pretrained(self.base_actor_path)), self.base_processor()

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
        """The frozen feature extractor over the feature backbone, loaded once and shared by the
        features, critic, actor and evaluation stages (it is never trained)."""
        from .models.features import VLMFeatureExtractor
        from .models.processing import load_processor

        if self._extractor is None:
            self._extractor = VLMFeatureExtractor.from_pretrained(
                self.feature_backbone_path, layer=self.config.feature_layer, pooling=self.config.feature_pooling,
                processor=load_processor(self.feature_backbone_path, **self.config.processor_kwargs),
                feature_input=self.config.feature_input,
            )
        return self._extractor

    def scorer(self) -> Any:
        """The trained critic with its feature extractor and text tokenizer
        (:class:`~digiq_trl.models.scoring.CriticScorer`)."""
        from .models.scoring import CriticScorer

        return CriticScorer(self.load_critic(), self.extractor())

    def load_critic(self) -> Any:
        """The trained critic, in eval mode."""
        from .models.critic import DigiQCritic

        self.require("critic", "model.safetensors")
        return DigiQCritic.from_pretrained(str(self.path("critic"))).eval()

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
    def write_manifest(self, folder: Path, fingerprint: str, files: Iterable[Path] | None = None) -> None:
        """Record ``fingerprint`` and the sha256 of ``files`` (default: every file under ``folder`` but
        the manifest and the :data:`RUN_RECORDS`) in ``folder/manifest.json``, written atomically (a
        crash leaves the old manifest or none)."""
        listed = sorted(files) if files is not None else sorted(
            p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and p.name not in RUN_RECORDS
        )
        entries = {os.path.relpath(p, self.root): sha256_file(p) for p in listed}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "files": entries}, indent=1) + "\n")
        tmp.replace(folder / MANIFEST)

    def is_current(self, stage: str, folder: Path, fingerprint: str) -> bool:
        """Whether ``folder`` holds a finished output made with ``fingerprint`` (files verified).

        Raises:
            DamagedArtifactError: the manifest matches but a file is missing or changed.
        """
        manifest = folder / MANIFEST
        if not manifest.exists():
            return False
        recorded = json.loads(manifest.read_text())
        if recorded.get("fingerprint") != fingerprint:
            return False
        for name, digest in recorded["files"].items():
            path = self.root / name
            if not path.is_file() or sha256_file(path) != digest:
                state = "is missing" if not path.is_file() else "does not match its manifest (sha256 differs)"
                raise DamagedArtifactError(
                    f"stage {stage}: {path} {state}; the output is damaged. Delete {folder} to recompute "
                    f"the {stage} stage and everything after it."
                )
        return True

    def fingerprint(self, folder: Path) -> str:
        """The fingerprint recorded in ``folder``'s manifest ("" when there is none)."""
        manifest = folder / MANIFEST
        return json.loads(manifest.read_text()).get("fingerprint", "") if manifest.exists() else ""
