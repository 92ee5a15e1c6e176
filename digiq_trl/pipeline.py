"""The whole Digi-Q method as one resumable run (``examples/train.py`` and ``digiq-trl train``).

Readable top to bottom: :meth:`DigiQPipeline.run` walks the stages of
:data:`~digiq_trl.pipeline_config.STAGES` in order. Each stage writes its own folder of
``output_dir`` (:class:`~digiq_trl.artifacts.RunArtifacts`) atomically, with a manifest; a stage
whose manifest matches the configuration is reused, so an interrupted run resumes and a changed
option recomputes exactly the stages that depend on it. Every stage starts from the run's seed,
whatever ran before it in the process, so fresh and resumed runs give the same outputs.

1. ``base_actor``: the policy to improve: a Hub id / path, or (embedded default) a tiny Qwen2-VL
   behavior-cloned in the simulated phone, the role AutoUI plays in the paper.
2. ``data``: offline transitions: a Hub id / path, or collected in the simulator by the base actor
   (sampling); split by episode into train/test.
3. ``representation`` (Digi-Q stage 1), ``features`` (stage 2), ``critic`` (stage 3), ``actor``
   (stage 4, with the filtered-BC baseline): see the trainers.
4. ``evaluate``: base actor / filtered BC / Digi-Q scored by :mod:`digiq_trl.run_scoring`, written by
   :mod:`digiq_trl.report` (``results.json``, ``report.md``, plots) and :mod:`digiq_trl.viewer`.

Under ``accelerate launch --num_processes K`` the critic and actor trainers run distributed; the
other stages run on the main process while the others wait, then every process reads their output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import set_seed

from .artifacts import PREPARATION, RunArtifacts, content_digest
from .fingerprints import STAGE_FIELDS, stage_fingerprint
from .pipeline_checks import MODEL_SOURCES, check_hub_access, fail
from .pipeline_config import ALT_ACTIONS_COLUMN, METHOD_WEIGHTINGS, STAGES, DigiQPipelineConfig
from .run_lock import RunLock
from .staging import staged_output


logger = logging.getLogger(__name__)

INPUT_FIELDS = ("dataset", *MODEL_SOURCES)
"""Options naming a dataset or model whose content, not only its path or id, enters the fingerprints."""

__all__ = ["DigiQPipeline", "DigiQPipelineConfig", "STAGES", "threads_per_process"]


class DigiQPipeline:
    """Runs the stages of :class:`DigiQPipelineConfig` in order; see the module docstring.

    Example:
        >>> from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig
        >>> results = DigiQPipeline(DigiQPipelineConfig(output_dir="outputs/run")).run()  # doctest: +SKIP
    """

    def __init__(self, config: DigiQPipelineConfig) -> None:
        self.config = config
        self.artifacts = RunArtifacts(config)
        self.state = PartialState(timeout=timedelta(seconds=config.ddp_timeout))
        self.timings: dict[str, float] = {}
        self.inputs: dict[str, str] = {}  # content digests of dataset / base_actor, set when the run starts
        self._upstream = ""  # the fingerprint of the stage before the running one
        self._dataset: Any = None  # the given dataset, once loaded
        self.results: dict[str, Any] = {"suite": config.suite, **config.phone_settings, "config": asdict(config)}
        torch.set_num_threads(config.num_threads or threads_per_process())

    def run(self) -> dict[str, Any]:
        """Run every stage not skipped; returns the results written to ``results.json``.

        Before any work, what the run needs from the Hub is checked
        (:func:`~digiq_trl.pipeline_checks.check_hub_access`: the datasets and models it names can be
        read, a push can happen) and the output folder's lock is taken
        (:class:`~digiq_trl.run_lock.RunLock`: a second run on the same folder ends at once, naming
        the first's PID).

        Raises:
            InvalidOptionError: a dataset or model that cannot be read, or a push that cannot happen.
            RunInProgressError: another run holds ``output_dir``.
        """
        check_hub_access(self.config)
        with RunLock(self.config.output_dir) if self.state.is_main_process else contextlib.nullcontext():
            self.state.wait_for_everyone()
            self._run_stages()
        return self.results

    def _run_stages(self) -> None:
        upstream = ""
        self.inputs = {name: content_digest(getattr(self.config, name)) for name in INPUT_FIELDS
                       if getattr(self.config, name) is not None}
        for stage in STAGES:
            fingerprint = stage_fingerprint(self.config, stage, upstream, self.inputs) if stage != "evaluate" else ""
            self._upstream, upstream = upstream, fingerprint
            if stage in self.config.skip_stages:
                logger.info("stage %s: skipped", stage)
                continue
            start = time.perf_counter()
            getattr(self, f"stage_{stage}")(fingerprint)
            self.timings[stage] = round(time.perf_counter() - start, 1)
            logger.info("stage %s: done in %.1f s", stage, self.timings[stage])

    def _once(self, stage: str, folder: Path, fingerprint: str, make: Callable[[], list[Path] | None],
              everywhere: bool = False) -> None:
        """Run ``make`` unless ``folder`` holds an output of this ``fingerprint``; then write its
        manifest (over the files ``make`` returns, else all files in ``folder``).

        ``make`` runs on the main process while the others wait, or on every process when
        ``everywhere`` (distributed trainers). Each run starts from the run's seed.
        """
        current = self.artifacts.is_current(stage, folder, fingerprint)
        inputs = {name: digest for name, digest in self.inputs.items() if name in STAGE_FIELDS[stage]}
        if current:
            logger.info("stage %s: reusing %s (its manifest matches this configuration)", stage, folder)
        elif self.artifacts.fingerprint(folder):
            logger.info("stage %s: %s since %s was made; recomputing it and every later stage", stage,
                        self._what_changed(folder, inputs), folder)
        if not current and (everywhere or self.state.is_main_process):
            set_seed(self.config.seed)
            files = make()
            if self.state.is_main_process:
                self.artifacts.write_manifest(folder, fingerprint, files, inputs, self._upstream)
        self.state.wait_for_everyone()

    def _what_changed(self, folder: Path, inputs: dict[str, str]) -> str:
        """Why ``folder``'s output is stale: the content of an input at the same path, an earlier
        stage, or this stage's options."""
        recorded = self.artifacts.manifest(folder)
        changed = [name for name, digest in inputs.items() if recorded.get("inputs", {}).get(name, digest) != digest]
        if changed:
            return " and ".join(f"the content of --{name} {getattr(self.config, name)} changed" for name in changed)
        if recorded.get("upstream", self._upstream) != self._upstream:
            return "an earlier stage changed"
        return "the configuration changed"

    @staticmethod
    def _resume_point(stage: str, folder: Path, output: Path | None = None) -> str | None:
        """The last complete checkpoint in ``folder`` that ``stage`` (making ``output``) resumes
        from, logged; None to start afresh."""
        from .trainers.checkpoints import last_complete_checkpoint

        resume = last_complete_checkpoint(folder)
        if resume:
            logger.info("stage %s: resuming %sfrom %s", stage, f"{output} " if output else "", resume)
        return resume

    # ----------------------------------------------------------------- base actor
    def stage_base_actor(self, fingerprint: str) -> None:
        """Behavior-clone the base actor (unless ``bc_steps`` is 0: a given ``base_actor`` as it is)."""
        if self.config.bc_steps > 0:
            self._once("base_actor", self.artifacts.path("base_actor"), fingerprint, self._behavior_clone)

    def _behavior_clone(self) -> None:
        from .trainers.behavior_cloning import behavior_clone

        cfg = self.config
        model, processor, peft_config = self._untrained_actor()
        demos = self._demonstrations()
        logger.info("behavior cloning on %d states", len(demos))
        with staged_output(self.artifacts.path("base_actor")) as out:
            behavior_clone(model, processor, demos, str(out), max_steps=cfg.bc_steps,
                           learning_rate=cfg.bc_learning_rate, batch_size=cfg.bc_batch_size, seed=cfg.seed,
                           use_cpu=self.state.device.type == "cpu", peft_config=peft_config, bf16=cfg.bf16,
                           gradient_accumulation_steps=cfg.bc_gradient_accumulation_steps,
                           activation_checkpointing=cfg.activation_checkpointing, report_to=cfg.report_to,
                           merge_adapter=True)  # a plain model: later stages add their own adapters
            processor.save_pretrained(out)

    def _untrained_actor(self) -> tuple[Any, Any, Any]:
        """The model to clone, its processor, and the LoRA config for a given (pretrained) actor."""
        cfg = self.config
        if cfg.base_actor is None:
            from .models.tiny import tiny_qwen2_vl

            return (*tiny_qwen2_vl(num_hidden_layers=cfg.bc_layers, num_attention_heads=cfg.bc_heads, seed=cfg.seed),
                    None)
        from .models.processing import load_processor
        from .trainers.lora import default_lora_config

        model = self.artifacts.load_model(cfg.base_actor)
        return model, load_processor(cfg.base_actor, **cfg.processor_kwargs), default_lora_config()

    def _demonstrations(self) -> Any:
        """The offline dataset's training episodes (the data stage's split), or noisy-expert
        demonstrations in the simulator."""
        cfg = self.config
        if cfg.dataset is not None:
            return self._split(self._load_dataset())["train"]
        from .trainers.behavior_cloning import expert_demonstrations

        return expert_demonstrations(f"digiq_trl/Phone-{cfg.suite}-v0", num_episodes=cfg.bc_episodes, noise=cfg.bc_noise,
                                     seed=cfg.seed, split="train", layout=cfg.layout,
                                     pseudo_entities=cfg.bc_pseudo_entities)

    def _split(self, transitions: Any) -> Any:
        """``transitions`` split by episode into train and test (the data stage's split). With
        ``evaluation: offline`` the test split must hold a successful episode, checked here, before
        anything trains on the data.

        Raises:
            InvalidOptionError: offline evaluation and no successful test episode.
        """
        from .data import split_by_episode
        from .run_scoring import offline_evaluation_set

        cfg = self.config
        splits = split_by_episode(transitions, cfg.test_size, seed=cfg.seed)
        if cfg.evaluation == "offline":
            try:
                offline_evaluation_set(splits["test"])
            except ValueError as error:
                raise fail("test_size", cfg.test_size, f"a share that puts a successful episode in the test split "
                           f"({error})") from None
        return splits

    def _load_dataset(self) -> Any:
        """The given offline dataset (its ``train`` split when it has splits), loaded and validated
        (every screenshot decoded) once per run, however many stages read it."""
        from datasets import DatasetDict

        from .data.hub import load_transitions

        if self._dataset is None:
            loaded = load_transitions(self.config.dataset)
            self._dataset = loaded["train"] if isinstance(loaded, DatasetDict) else loaded
        return self._dataset

    # ----------------------------------------------------------------- offline data
    def stage_data(self, fingerprint: str) -> None:
        """Load the offline transitions, or collect them with the base actor; split by episode."""
        self._once("data", self.artifacts.path("data"), fingerprint, self._make_data)

    def _make_data(self) -> list[Path]:
        from .envs import collect_transitions
        from .envs.policies import add_random_alternatives

        cfg = self.config
        if cfg.dataset is not None:
            transitions = self._load_dataset()
        else:
            from .models.policy import VLMPolicy

            model, processor = self.artifacts.load_base_actor()
            policy = VLMPolicy(model, processor, temperature=cfg.behavior_temperature,
                               batch_size=cfg.rollout_batch_size)
            transitions = collect_transitions(cfg.env_id, policy, cfg.collect_episodes, seed=cfg.seed, split="train",
                                              gamma=cfg.gamma,
                                              batch_size=cfg.rollout_batch_size, **cfg.env_kwargs)
        splits = self._split(transitions)
        for offset, name in enumerate(("train", "test")):
            splits[name] = add_random_alternatives(splits[name], cfg.ranking_alternatives, cfg.seed + offset,
                                                   column=ALT_ACTIONS_COLUMN)
        out_dir = self.artifacts.path("data")
        with staged_output(out_dir) as out:
            splits.save_to_disk(str(out))
        return _saved_dataset_files(out_dir)

    # ----------------------------------------------------------------- stage 1: representation
    def stage_representation(self, fingerprint: str) -> None:
        """Actionability fine-tuning of the base VLM (LoRA, merged), the critic's feature backbone;
        not run when ``representation_model`` or ``critic_model`` gives the backbone."""
        given = self.config.critic_model or self.config.representation_model
        if given:
            logger.info("stage representation: not run, the features come from %s", given)
            return
        self._once("representation", self.artifacts.path("representation"), fingerprint,
                   self._fine_tune_representation)

    def _fine_tune_representation(self) -> None:
        """Fine-tune with checkpoints in ``.partial/representation`` (an interrupted run resumes from
        the last complete one), then save the model into ``representation/`` atomically."""
        from .trainers.representation_trainer import train_representation

        partial = self.artifacts.root / ".partial" / "representation"  # its name is the model card's
        resume = self._resume_point("representation", partial)
        with staged_output(self.artifacts.path("representation")) as out:
            metrics = train_representation(self.artifacts.load_model(self.artifacts.base_actor_path),
                                           self.artifacts.base_processor(),
                                           self.artifacts.load_data()["train"],
                                           self.config.representation_args(partial), resume_from_checkpoint=resume,
                                           save_to=out, dataset_name=self.artifacts.dataset_hub_id)
            _write_json(out / "metrics.json", metrics)
        shutil.rmtree(partial.parent, ignore_errors=True)

    # ----------------------------------------------------------------- stage 2: features
    def stage_features(self, fingerprint: str) -> None:
        """Cache frozen-VLM features of both splits next to the data (reused by later stages)."""
        self._once("features", self.artifacts.path("features"), fingerprint, self._cache_features)

    def _cache_features(self) -> list[Path]:
        return [Path(f["filename"]) for split in self.featurized().values() for f in split.cache_files
                if Path(f["filename"]).name.startswith("cache-")]

    def featurized(self) -> Any:
        """Both splits with feature columns (computed once, then read from the Arrow cache)."""
        from datasets import DatasetDict

        from .models.feature_cache import cache_features

        with_alternatives = {"test"} | ({"train"} if self.config.critic_conservative_weight > 0 else set())
        return DatasetDict({
            name: cache_features(split, self.artifacts.extractor(),
                                 alt_actions_column=ALT_ACTIONS_COLUMN if name in with_alternatives else None)
            for name, split in self.artifacts.load_data().items()
        })

    # ----------------------------------------------------------------- stage 3: critic
    def stage_critic(self, fingerprint: str) -> None:
        """Train the critic on cached features (distributed under ``accelerate launch``), resuming
        from its last checkpoint; the finished critic replaces ``critic/`` atomically. Not run when
        ``critic_model`` gives a trained critic."""
        if self.config.critic_model:
            logger.info("stage critic: not run, using the given critic %s", self.config.critic_model)
            return
        self._once("critic", self.artifacts.path("critic"), fingerprint, self._train_critic, everywhere=True)

    def _train_critic(self) -> None:
        from .trainers.critic_trainer import DigiQCriticTrainer

        cfg = self.config
        partial = self.artifacts.root / "critic.partial"
        data = self.featurized()
        critic, tokenizer = self._untrained_critic()
        trainer = DigiQCriticTrainer(critic, cfg.critic_args(partial), train_dataset=data["train"],
                                     eval_dataset=data["test"], feature_extractor=self.artifacts.extractor(),
                                     processing_class=tokenizer)
        trainer.train(resume_from_checkpoint=self._resume_point("critic", partial))
        metrics = trainer.evaluate()
        trainer.model.config.backbone_model_id = self.artifacts.backbone_reference()
        trainer.save_model(str(partial / "critic"))
        if self.state.is_main_process:
            with staged_output(self.artifacts.path("critic")) as out:
                for item in (partial / "critic").iterdir():
                    shutil.move(str(item), out / item.name)
                _write_json(out / "eval_metrics.json", metrics)
                _write_json(out / "log_history.json", trainer.state.log_history)
        if cfg.push_to_hub:  # it saves into the trainer's output_dir first: removed after it
            trainer.push_to_hub(dataset_name=self.artifacts.dataset_hub_id)
        if self.state.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)

    def _untrained_critic(self) -> tuple[Any, Any]:
        """The critic to train (heads sized for the features, the configured text encoder) and its
        text encoder's tokenizer (None without one)."""
        from .models.critic import DigiQCritic, DigiQCriticModelConfig, tiny_text_encoder_config

        cfg = self.config
        dim = self.artifacts.extractor().hidden_size
        config = DigiQCriticModelConfig(q_input_dim=dim, v_input_dim=dim, hidden_size=cfg.critic_hidden_size,
                                        text_layout=cfg.critic_text_layout, text_match=cfg.critic_text_match,
                                        text_pooling=cfg.critic_text_pooling)
        if cfg.critic_text_encoder == "none":
            return DigiQCritic(config), None
        if cfg.critic_text_encoder == "tiny":
            tokenizer = self.artifacts.base_processor().tokenizer
            config.text_encoder_config = tiny_text_encoder_config(len(tokenizer), tokenizer.pad_token_id or 0)
            return DigiQCritic(config), tokenizer
        from transformers import AutoTokenizer

        return (DigiQCritic.with_pretrained_text_encoder(config, cfg.critic_text_encoder),
                AutoTokenizer.from_pretrained(cfg.critic_text_encoder))

    # ----------------------------------------------------------------- stage 4: actor
    def stage_actor(self, fingerprint: str) -> None:
        """Filtered BC (baseline) and Digi-Q Best-of-N, each a LoRA adapter on the base actor, for
        every training seed."""
        for method, weighting in METHOD_WEIGHTINGS.items():
            for seed in self.config.actor_seeds:
                folder = self.artifacts.actor_path(method, seed)
                push = self.config.push_to_hub and method == "digiq"
                self._once("actor", folder, f"{fingerprint}-{method}-seed{seed}",
                           lambda: self.train_actor(weighting, self.actor_states(seed), folder, seed, push),  # noqa: B023 (called before the loop moves on)
                           everywhere=True)

    def actor_states(self, seed: int) -> Any:
        """The training transitions of the actor: the whole training split, or whole episodes up
        to ``actor_max_states`` (the same states for every method)."""
        from .data import take_episodes

        train = self.artifacts.load_data()["train"]
        limit = self.config.actor_max_states
        return train if limit is None or len(train) <= limit else take_episodes(train, limit, seed)

    def train_actor(self, weighting: str, states: Any, out: Path, seed: int, push: bool = False) -> None:
        """Train one LoRA adapter on the base actor with the actor stage's settings and save it in
        ``out`` atomically, with its preparation (candidates, advantages, targets; no images) and
        statistics. The trainer uses the run's critic and feature extractor where ``weighting`` needs them."""
        from .trainers.actor_trainer import BestOfNActorTrainer

        model, processor = self.artifacts.load_base_actor()
        staging = out.parent / f".{out.name}.partial"
        trainer = BestOfNActorTrainer(
            model, critic=self.artifacts.critic_source,
            args=self.config.actor_args(weighting, staging, seed, self.artifacts.preparation_cache, push),
            train_dataset=states, processing_class=processor, feature_extractor=self.artifacts.extractor(),
        )
        trainer.train(resume_from_checkpoint=self._resume_point("actor", staging, out))
        trainer.save_model(str(staging / "final"))
        if self.state.is_main_process:
            with staged_output(out) as final:
                for item in (staging / "final").iterdir():
                    shutil.move(str(item), final / item.name)
                _write_json(final / "preparation_metrics.json", trainer.preparation_metrics)
                images = [c for c in trainer.prepared_dataset.column_names if c in ("image", "next_image")]
                trainer.prepared_dataset.remove_columns(images).save_to_disk(str(final / PREPARATION))
        if push:  # it saves into the trainer's output_dir first: removed after it
            trainer.push_to_hub(dataset_name=self.artifacts.dataset_hub_id)
        if self.state.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)

    # ----------------------------------------------------------------- evaluation
    def stage_evaluate(self, fingerprint: str) -> None:
        """Score base / filtered BC / Digi-Q and write ``results.json``, ``report.md``, the plots and
        the trajectory viewer and, in the simulator, ``evaluation.html`` (every method's evaluation
        episodes side by side; main process). The report also gets the critic's held-out values
        (V(s0) per episode among them) and Digi-Q's saved Best-of-N preparations."""
        if self.state.is_main_process:
            from .report import write_run_report
            from .run_scoring import evaluate_run
            from .viewer import write_viewer
            from .viewer.comparison import write_comparison

            self.results.update(evaluate_run(self.config, self.artifacts))
            self.results["timings_s"] = dict(self.timings)
            critic_values = self._critic_values() if self.artifacts.has_critic else None
            preparations = {seed: self.artifacts.preparation_path("digiq", seed)
                            for seed in self.config.actor_seeds}
            write_run_report(self.results, self.artifacts.root, critic_values,
                             {seed: path for seed, path in preparations.items() if path.is_dir()})
            write_viewer(self.artifacts.root, extractor=self.artifacts.extractor())
            if self.config.evaluation == "simulator":
                write_comparison(self.results, self.artifacts.root / "evaluation.html",
                                 title=f"Evaluation episodes of {self.artifacts.root.name}")
        self.state.wait_for_everyone()

    def _critic_values(self) -> tuple[list[int], dict[str, list[float]], list[bool]]:
        """max(Q1, Q2)(s, a) and max(V1, V2)(s) of the held-out steps, with episode success."""
        columns = ["q_features", "v_features", "step_id", "trajectory_reward", "goal", "history", "action"]
        test = self.featurized()["test"].select_columns(columns).with_format("torch")[:]
        values = self.artifacts.scorer().values(test["q_features"].float(), test["v_features"].float(),
                                                test["goal"], test["history"], test["action"])
        success = [r > 0 for r in test["trajectory_reward"].tolist()]
        return test["step_id"].tolist(), {"Q": values["q"].tolist(), "V": values["v"].tolist()}, success


def threads_per_process() -> int:
    """The cores this process may run on, shared evenly among the processes on this machine
    (``LOCAL_WORLD_SIZE``, which ``accelerate launch`` and ``torchrun`` set)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _saved_dataset_files(folder: Path) -> list[Path]:
    """The files ``save_to_disk`` wrote (not the feature caches that later stages add beside them)."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("cache-")]


def _write_json(path: Path, data: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
