"""Writing the viewer page of a transitions dataset or of a pipeline run folder.

:func:`write_dataset_viewer` joins a dataset's episodes (:mod:`~digiq_trl.viewer.episodes`), a
critic's values and a Best-of-N preparation's candidates into one page
(:mod:`~digiq_trl.viewer.page`); :func:`write_viewer` finds those three in a run folder.

Example:
    >>> from digiq_trl.viewer.writer import write_viewer
    >>> write_viewer("outputs/digiq-default")  # doctest: +SKIP
    PosixPath('outputs/digiq-default/viewer.html')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

from .episodes import best_of_n_steps, build_episodes, critic_values, featurize, first_episodes
from .page import render_page


VIEWER_FILENAME = "viewer.html"
"""Where :func:`write_viewer` puts the page in a run folder by default."""


def default_preparation(run_dir: str | Path) -> Path | None:
    """The Best-of-N preparation of a pipeline run, ``actor/digiq/seed<k>/preparation`` with the
    lowest seed ``k``, or None when the actor stage has not written one."""
    found = [path for path in Path(run_dir).glob("actor/digiq/seed*/preparation")
             if re.fullmatch(r"seed\d+", path.parent.name) and (path / "dataset_info.json").exists()]
    return min(found, key=lambda path: int(path.parent.name[4:]), default=None)


def critic_feature_extractor(critic: Any, backbone: str | Path | None = None) -> Any:
    """The frozen VLM whose features ``critic`` reads (:meth:`VLMFeatureExtractor.for_critic`: its
    recorded model, layer and pooling, checked against its recorded weights digest), on this
    process's accelerator (:func:`~digiq_trl.models.loading.process_device`); ``backbone`` loads a moved
    copy (e.g. a run's ``representation/``)."""
    from ..models.features import VLMFeatureExtractor
    from ..models.loading import process_device

    return VLMFeatureExtractor.for_critic(critic.config, backbone=backbone, device=process_device())


def _splits(dataset: str | Path | Dataset | DatasetDict) -> dict[str, Dataset]:
    """Named splits of a dataset, a ``DatasetDict``, or a path / Hub id of either."""
    if isinstance(dataset, (str, Path)):
        from ..data.hub import load_transitions

        dataset = load_transitions(dataset)
    if isinstance(dataset, DatasetDict):
        return dict(dataset)
    return {"data": dataset}


def write_dataset_viewer(
    dataset: str | Path | Dataset | DatasetDict,
    output: str | Path,
    *,
    critic: str | Path | Any | None = None,
    backbone: str | Path | None = None,
    extractor: Any | None = None,
    preparation: str | Path | None = None,
    max_episodes: int | None = None,
    title: str | None = None,
    notes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write the viewer page of a transitions dataset, with a critic's values and Best-of-N candidates.

    Args:
        dataset: transitions in the canonical schema: a ``Dataset``, a ``DatasetDict`` (its splits
            become the page's split filter), or a folder / Hub id of one.
        output: the HTML file to write (replaced only once complete).
        critic: a :class:`~digiq_trl.models.critic.DigiQCritic` or its folder; adds V(s), Q(s, a)
            and their difference to every step.
        backbone: where to load the critic's feature backbone from instead of the path its config
            records (see :func:`critic_feature_extractor`).
        extractor: an already loaded feature extractor of the critic (skips loading one).
        preparation: an actor preparation dataset folder (``save_to_disk``) whose candidates and
            advantages are joined to the steps on ``(episode_id, step_id)``.
        max_episodes: show only the first this many episodes of each split (None: all).
        title: the page's title (default: from the dataset).
        notes: per ``episode_id``, what an evaluation recorded about the episode: the ``judge``'s
            verdict (``success``, ``reasoning``, ``error``) and a device ``error``; shown with it.

    Returns:
        The path of the page.

    Example:
        >>> from digiq_trl.viewer import write_dataset_viewer
        >>> write_dataset_viewer("data/general-noisy", "noisy.html")  # doctest: +SKIP
        PosixPath('noisy.html')
    """
    from ..models.critic import DigiQCritic
    from ..targets import advantage_formula

    source = str(dataset) if isinstance(dataset, (str, Path)) else "dataset"
    splits = {name: first_episodes(split, max_episodes) for name, split in _splits(dataset).items()}
    values, formula = None, None
    if critic is not None:
        from ..models.loading import on_process_device
        from ..models.scoring import CriticScorer

        model = critic if isinstance(critic, DigiQCritic) else on_process_device(DigiQCritic.from_pretrained(str(critic)))
        extractor = extractor if extractor is not None else critic_feature_extractor(model, backbone)
        scorer = CriticScorer(model, extractor)
        values = {name: critic_values(featurize(split, extractor), scorer) for name, split in splits.items()}
        formula = advantage_formula(model.config.v_target_combine)
    best_of_n = best_of_n_steps(load_from_disk(str(preparation))) if preparation is not None else None
    episodes, screenshots = build_episodes(splits, values, best_of_n, notes)
    page = render_page(
        episodes, screenshots, title=title or f"Digi-Q trajectories: {Path(source).name}", source=source,
        critic=_describe(critic), best_of_n=None if preparation is None else str(preparation),
        advantage_formula=formula,
    )
    return _write_atomically(Path(output), page)


def write_viewer(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    extractor: Any | None = None,
    preparation: str | Path | None = None,
    max_episodes: int | None = None,
) -> Path:
    """Write the viewer page of a pipeline run folder (``output_dir`` of :mod:`digiq_trl.pipeline`).

    Shows ``data/`` (train and test splits), with the values of ``critic/`` when it exists, and the
    Best-of-N candidates of :func:`default_preparation`. The features the pipeline cached are
    reused, so on a finished run this costs only the screenshot thumbnails; pass the pipeline's
    loaded ``extractor`` to also skip loading the backbone.

    Args:
        run_dir: the run folder.
        output: the HTML file to write (default: ``run_dir/viewer.html``).
        extractor: the critic's feature extractor, when already loaded.
        preparation: another preparation folder than the default one.
        max_episodes: show only the first this many episodes of each split (None: all).

    Returns:
        The path of the page.

    Example:
        >>> from digiq_trl.viewer import write_viewer
        >>> write_viewer("outputs/digiq-default", max_episodes=200)  # doctest: +SKIP
        PosixPath('outputs/digiq-default/viewer.html')
    """
    run = Path(run_dir)
    if not (run / "data" / "dataset_dict.json").exists():
        raise FileNotFoundError(f"{run} holds no data/ DatasetDict: is it the output_dir of a pipeline run?")
    critic = run / "critic" if (run / "critic" / "model.safetensors").exists() else None
    return write_dataset_viewer(
        run / "data", output if output is not None else run / VIEWER_FILENAME,
        critic=critic, backbone=_moved_backbone(run, critic), extractor=extractor,
        preparation=preparation if preparation is not None else default_preparation(run),
        max_episodes=max_episodes, title=f"Digi-Q trajectories: {run.resolve().name}",
    )


def _moved_backbone(run: Path, critic: Path | None) -> Path | None:
    """The run's ``representation/`` when the critic's recorded backbone is no local folder (the run
    was moved, or it is read from another directory), else None: load what the critic records, the
    model its features were cached with. The weights digest check catches a wrong fallback."""
    if critic is None or not (run / "representation" / "config.json").exists():
        return None
    from ..models.critic import DigiQCriticModelConfig

    recorded = DigiQCriticModelConfig.from_pretrained(str(critic)).backbone_model_id
    return None if recorded and Path(recorded).is_dir() else run / "representation"


def _describe(critic: str | Path | Any | None) -> str | None:
    if critic is None or isinstance(critic, (str, Path)):
        return None if critic is None else str(critic)
    return getattr(critic, "name_or_path", None) or type(critic).__name__


def _write_atomically(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path
