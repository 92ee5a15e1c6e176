"""The whole Digi-Q method as one resumable run: ``examples/train.py`` is a thin wrapper around it.

Stages, in order, each writing into its own folder of ``output_dir`` and skipped when that folder
is already complete (so an interrupted run resumes, and a finished stage can be reused):

1. ``base_actor``: the policy to improve. A Hub id / path, or (embedded default) a tiny Qwen2-VL
   behavior-cloned in the simulated phone, the role AutoUI plays in the paper.
2. ``data``: offline transitions: a Hub id / path, or collected in the simulator by the base actor
   (sampling), split by episode into train/test.
3. ``representation``: actionability fine-tuning of the feature VLM (stage 1 of Digi-Q).
4. ``features``: frozen-VLM features cached as Arrow columns (stage 2).
5. ``critic``: double Q / double V heads by offline TD learning (stage 3).
6. ``actor``: Best-of-N policy extraction into a LoRA adapter, and the filtered-BC baseline (stage 4).
7. ``evaluate``: success rates in the simulator on held-out goals, ``results.json``, ``report.md``
   and plots.

Under ``accelerate launch --num_processes K`` the critic and actor trainers run distributed; the
other stages run on the main process while the others wait, then every process reads their output.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from accelerate import PartialState
from datasets import Dataset, DatasetDict, load_from_disk

from .actions import format_action
from .data import split_by_episode
from .envs import collect_transitions
from .envs.tasks import SPLITS
from .envs.policies import random_action
from .evaluation import action_kind_recall, changed_share, greedy_actions, sum_by_kind
from .staging import staged_output

logger = logging.getLogger(__name__)

STAGES = ("base_actor", "data", "representation", "features", "critic", "actor", "evaluate")
METHODS = ("filtered_bc", "digiq")


@dataclass
class DigiQPipelineConfig:
    """Options of the whole run; every field is a command-line flag and a YAML key of ``train.py``."""

    output_dir: str = field(
        default="outputs/digiq-default",
        metadata={"help": "Where every stage writes; a stage whose output is already here is reused."},
    )
    skip_stages: list[str] = field(
        default_factory=list,
        metadata={"help": f"Stages not to run, among {list(STAGES)} (their outputs must exist if needed)."},
    )
    suite: str = field(default="general", metadata={"help": "Simulator task suite: general or webshop."})
    seed: int = field(default=0, metadata={"help": "Seed of data collection, initialization and training."})
    num_threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads per process. 0: the available cores divided among the processes on "
                  "this machine (accelerate launch sets OMP_NUM_THREADS=1, which would leave a CPU run on one core)."},
    )
    bf16: bool = field(default=False, metadata={"help": "Train in bfloat16 (GPUs); False on CPU."})
    layout: str = field(
        default="fixed",
        metadata={"help": "Simulator layout: fixed (strong cues, for tiny models) or random (for pretrained VLMs)."},
    )
    # base actor
    base_actor: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of the VLM actor to improve. Default: behavior-clone a tiny Qwen2-VL "
                  "in the simulator (offline, CPU)."},
    )
    bc_layers: int = field(default=3, metadata={"help": "Decoder layers of the tiny base actor."})
    bc_heads: int = field(
        default=4, metadata={"help": "Attention heads of the tiny base actor (copying the goal into TYPE needs >2)."}
    )
    bc_episodes: int = field(default=1500, metadata={"help": "Noisy-expert episodes for behavior cloning."})
    bc_noise: float = field(default=0.15, metadata={"help": "Random-action probability of the BC demonstrations."})
    bc_pseudo_entities: bool = field(
        default=False,
        metadata={"help": "Add variants of the search and video goals with made-up entity names to the BC "
                  "demonstrations, so the actor has to copy queries from the goal instead of memorizing them "
                  "(what held-out goals need; in a prototype, copying emerged only after ~3000 bc_steps)."},
    )
    bc_steps: int = field(default=800, metadata={"help": "Behavior-cloning optimizer steps."})
    bc_learning_rate: float = field(default=2e-3, metadata={"help": "Behavior-cloning peak learning rate."})
    # offline data
    dataset: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of canonical transitions. Default: collect them with the base actor."},
    )
    collect_episodes: int = field(default=400, metadata={"help": "Episodes the base actor plays to make the data."})
    behavior_temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature of the base actor while collecting (diverse data)."}
    )
    test_size: float = field(default=0.2, metadata={"help": "Fraction of episodes held out for critic evaluation."})
    # representation
    representation_steps: int = field(default=150, metadata={"help": "Actionability fine-tuning steps (LoRA)."})
    representation_learning_rate: float = field(default=2e-3, metadata={"help": "Actionability learning rate."})
    # features and critic
    feature_layer: int | None = field(default=None, metadata={"help": "VLM layer of the features (default: middle)."})
    feature_pooling: str = field(default="mean", metadata={"help": "Pooling over action tokens: mean or last."})
    critic_hidden_size: int = field(default=256, metadata={"help": "Hidden width of the Q and V heads."})
    critic_steps: int = field(default=1500, metadata={"help": "Critic optimizer steps."})
    critic_learning_rate: float = field(default=1e-3, metadata={"help": "Critic learning rate."})
    critic_batch_size: int = field(default=64, metadata={"help": "Critic batch size per device."})
    critic_gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Critic gradient accumulation (the paper: batch 32 x 4)."}
    )
    critic_max_grad_norm: float = field(default=1.0, metadata={"help": "Critic gradient clipping."})
    ranking_alternatives: int = field(
        default=4,
        metadata={"help": "Random alternative actions per state (alt_actions): the held-out ranking metric, and "
                  "the conservative penalty's negatives in training."},
    )
    critic_conservative_weight: float = field(
        default=1.0,
        metadata={"help": "Conservative penalty on Q of random alternative actions (DigiQCriticConfig."
                  "conservative_weight); 0 is the paper's critic. Measured in the simulator: the plain TD "
                  "critic ranked the expert's action above random ones in 30 %% of states, this one in 95 %%."},
    )
    # actor
    num_candidates: int = field(default=16, metadata={"help": "Best-of-N: candidate actions per state."})
    candidate_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the candidates."})
    advantage_threshold: float = field(
        default=0.02,
        metadata={"help": "Best-of-N: train on states with A > this (the paper: 0.10 General, 0.05 WebShop, for "
                  "data with 20-30 %% success; advantages are smaller when successes are rarer)."},
    )
    actor_steps: int = field(default=80, metadata={"help": "Actor (LoRA) optimizer steps per method and seed."})
    actor_learning_rate: float = field(default=3e-4, metadata={"help": "Actor (LoRA) learning rate."})
    actor_batch_size: int = field(default=32, metadata={"help": "Actor batch size."})
    actor_seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata={"help": "Training seeds of the actor stage: each method is trained once per seed (candidates, "
                  "LoRA init, data order) and the results table reports the spread across them."},
    )
    actor_max_states: int | None = field(
        default=None,
        metadata={"help": "Train the actor on at most this many training states (whole episodes, drawn with the "
                  "seed), e.g. to try settings quickly. None (default): the whole offline dataset, as the paper."},
    )
    anchor: str = field(
        default="greedy",
        metadata={"help": "What a state imitates when the critic finds nothing better than the threshold (or, for "
                  "filtered BC, when its trajectory failed): greedy (the base actor's own action), logged, or none "
                  "(the state is dropped). See BestOfNActorConfig.anchor."},
    )
    anchor_weight: float = field(default=1.0, metadata={"help": "Loss weight of the anchor targets."})
    # evaluation
    evaluation: str = field(
        default="simulator",
        metadata={"help": "simulator: success rate in the simulated phone; offline: AitW action matching on the "
                  "held-out split of the data (real data, no device)."},
    )
    eval_split: str = field(
        default="test",
        metadata={"help": "Goal split of the evaluation: test (the published test goals, as the paper reports "
                  "AitW; they also occur in train), train, or heldout."},
    )
    eval_episodes: int = field(default=200, metadata={"help": "Evaluation episodes per method and seed."})
    eval_seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Evaluation seeds (each plays eval_episodes episodes)."}
    )
    generalization_split: str | None = field(
        default="heldout",
        metadata={"help": "A second goal split reported as a generalization column (one seed, eval_episodes "
                  "episodes): heldout goals no training stage saw. none skips it."},
    )
    probe_states: int = field(
        default=400,
        metadata={"help": "States of the critic's test split on which every actor's greedy actions are compared, "
                  "per action class, with the simulator expert's (the logged ones for a given dataset): a "
                  "forgetting probe; and with the base actor's (the share of actions changed)."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the critic and the actor adapter to the Hub."})
    hub_model_prefix: str | None = field(
        default=None, metadata={"help": "Hub repo prefix: pushes <prefix>-critic and <prefix>-actor."}
    )

    def __post_init__(self) -> None:
        if self.evaluation not in ("simulator", "offline"):
            raise ValueError(f"evaluation must be 'simulator' or 'offline', got {self.evaluation!r}")
        if self.layout not in ("fixed", "random"):
            raise ValueError(f"layout must be 'fixed' or 'random', got {self.layout!r}")
        unknown = set(self.skip_stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)} in skip_stages; stages are {list(STAGES)}")
        if self.generalization_split in ("", "none", "None"):  # how a command line spells None
            self.generalization_split = None
        for split in (self.eval_split, self.generalization_split):
            if split is not None and split not in SPLITS:
                raise ValueError(f"unknown goal split {split!r}; splits are {list(SPLITS)}")
        if self.push_to_hub and not self.hub_model_prefix:
            raise ValueError("push_to_hub needs hub_model_prefix (e.g. 'my-user/digiq-general')")

    @property
    def env_id(self) -> str:
        """The simulator's Gymnasium id for the chosen suite."""
        return f"digiq_trl/Phone-{self.suite}-v0"

    def path(self, stage: str) -> Path:
        """The folder of one stage's output."""
        return Path(self.output_dir) / stage


class DigiQPipeline:
    """Runs the stages of :class:`DigiQPipelineConfig` in order; see the module docstring.

    Example:
        >>> from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig
        >>> results = DigiQPipeline(DigiQPipelineConfig(output_dir="outputs/run")).run()  # doctest: +SKIP
    """

    def __init__(self, config: DigiQPipelineConfig) -> None:
        self.config = config
        self.state = PartialState()
        self.timings: dict[str, float] = {}
        self._extractor: Any = None
        self.results: dict[str, Any] = {"suite": config.suite, "config": asdict(config)}
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(config.num_threads or threads_per_process())

    def run(self) -> dict[str, Any]:
        """Run every stage not skipped; returns the results written to ``results.json``."""
        for stage in STAGES:
            if stage in self.config.skip_stages:
                logger.info("stage %s: skipped", stage)
                continue
            start = time.perf_counter()
            logger.info("stage %s: start", stage)
            getattr(self, f"stage_{stage}")()
            self.timings[stage] = round(time.perf_counter() - start, 1)
            logger.info("stage %s: done in %.1f s", stage, self.timings[stage])
        self.write_outputs()
        return self.results

    def _on_main(self, done_marker: Path, work: Callable[[], None]) -> None:
        """Run ``work`` on the main process unless ``done_marker`` exists; every process waits."""
        if self.state.is_main_process and not done_marker.exists():
            work()
        self.state.wait_for_everyone()

    # ----------------------------------------------------------------- stage 0: base actor
    def stage_base_actor(self) -> None:
        """Behavior-clone the tiny base actor, unless a ``base_actor`` was given or one exists."""
        if self.config.base_actor is None:
            self._on_main(self.config.path("base_actor") / "config.json", self._behavior_clone)

    def _behavior_clone(self) -> None:
        from .testing import tiny_qwen2_vl
        from .trainers.behavior_cloning import behavior_clone, expert_demonstrations

        cfg = self.config
        torch.manual_seed(cfg.seed)
        model, processor = tiny_qwen2_vl(
            num_hidden_layers=cfg.bc_layers, num_attention_heads=cfg.bc_heads, seed=cfg.seed
        )
        demos = expert_demonstrations(
            cfg.env_id, num_episodes=cfg.bc_episodes, noise=cfg.bc_noise, seed=cfg.seed, split="train",
            layout=cfg.layout, pseudo_entities=cfg.bc_pseudo_entities,
        )
        logger.info("behavior cloning on %d noisy-expert states", len(demos))
        with staged_output(cfg.path("base_actor")) as out:
            behavior_clone(model, processor, demos, str(out), max_steps=cfg.bc_steps,
                           learning_rate=cfg.bc_learning_rate, seed=cfg.seed)
            processor.save_pretrained(out)

    @property
    def base_actor_path(self) -> str:
        """Hub id or folder of the base actor."""
        return self.config.base_actor or str(self.config.path("base_actor"))

    def load_base_actor(self) -> tuple[torch.nn.Module, Any]:
        """A fresh copy of the base actor and its processor."""
        from transformers import AutoModelForImageTextToText

        from .models.processing import load_processor

        model = AutoModelForImageTextToText.from_pretrained(self.base_actor_path)
        return model, load_processor(self.base_actor_path)

    # ----------------------------------------------------------------- stage 1: offline data
    def stage_data(self) -> None:
        """Load the offline transitions, or collect them with the base actor; split by episode."""
        self._on_main(self.config.path("data") / "dataset_dict.json", self._make_data)

    def _make_data(self) -> None:
        cfg = self.config
        if cfg.dataset is not None:
            from .data.hub import load_transitions

            loaded = load_transitions(cfg.dataset)
            transitions = loaded["train"] if isinstance(loaded, DatasetDict) else loaded
        else:
            from .models.policy import VLMPolicy

            model, processor = self.load_base_actor()
            torch.manual_seed(cfg.seed)
            policy = VLMPolicy(model, processor, temperature=cfg.behavior_temperature)
            transitions = collect_transitions(
                cfg.env_id, policy, cfg.collect_episodes, seed=cfg.seed, split="train", layout=cfg.layout
            )
        splits = split_by_episode(transitions, cfg.test_size, seed=cfg.seed)
        for offset, name in enumerate(("train", "test")):
            splits[name] = add_random_alternatives(splits[name], cfg.ranking_alternatives, cfg.seed + offset)
        with staged_output(cfg.path("data")) as out:
            splits.save_to_disk(str(out))

    def load_data(self) -> DatasetDict:
        """The train/test transitions written by the data stage."""
        return load_from_disk(str(self.config.path("data")))

    # ----------------------------------------------------------------- stage 2: representation
    def stage_representation(self) -> None:
        """Actionability fine-tuning of the base VLM (LoRA, merged), the critic's feature backbone."""
        self._on_main(self.config.path("representation") / "config.json", self._fine_tune_representation)

    def _fine_tune_representation(self) -> None:
        from .trainers.representation_config import RepresentationConfig
        from .trainers.representation_trainer import train_representation

        cfg = self.config
        with staged_output(cfg.path("representation")) as out:
            args = RepresentationConfig(
                output_dir=str(out), max_steps=cfg.representation_steps,
                learning_rate=cfg.representation_learning_rate, per_device_train_batch_size=16,
                merge_adapter=True, eval_fraction=0.2, balance=True, seed=cfg.seed,
                logging_steps=max(1, cfg.representation_steps // 10), save_strategy="no",
                report_to=[], bf16=cfg.bf16,
            )
            metrics = train_representation(self.base_actor_path, None, self.load_data()["train"], args)
            _write_json(out / "metrics.json", metrics)

    @property
    def feature_backbone_path(self) -> str:
        """The fine-tuned representation model when that stage ran, else the base actor."""
        fine_tuned = self.config.path("representation")
        return str(fine_tuned) if (fine_tuned / "config.json").exists() else self.base_actor_path

    def load_extractor(self) -> Any:
        """The frozen feature extractor over the feature backbone, loaded once and shared by the
        features, critic, actor and evaluation stages (it is never trained)."""
        from .models.features import VLMFeatureExtractor

        if self._extractor is None:
            self._extractor = VLMFeatureExtractor.from_pretrained(
                self.feature_backbone_path, layer=self.config.feature_layer, pooling=self.config.feature_pooling
            )
        return self._extractor

    def load_critic(self) -> Any:
        """The trained critic of the critic stage, in eval mode."""
        from .models.critic import DigiQCritic

        return DigiQCritic.from_pretrained(str(self.config.path("critic"))).eval()

    # ----------------------------------------------------------------- stage 3: features
    def stage_features(self) -> None:
        """Cache frozen-VLM features of both splits next to the data (reused by later stages)."""
        self._on_main(self.config.path("features.done"), self._cache_features)

    def _cache_features(self) -> None:
        self.featurized(self.load_extractor())
        self.config.path("features.done").write_text(self.feature_backbone_path + "\n")

    def featurized(self, extractor: Any) -> DatasetDict:
        """Both splits with feature columns (computed once, then read from the Arrow cache)."""
        from .models.feature_cache import cache_features

        data = self.load_data()
        with_alternatives = {"test"} | ({"train"} if self.config.critic_conservative_weight > 0 else set())
        return DatasetDict({
            name: cache_features(split, extractor,
                                 alt_actions_column=ALT_ACTIONS_COLUMN if name in with_alternatives else None)
            for name, split in data.items()
        })

    # ----------------------------------------------------------------- stage 4: critic
    def stage_critic(self) -> None:
        """Train the critic on cached features (distributed under ``accelerate launch``)."""
        if (self.config.path("critic") / "model.safetensors").exists():
            return
        from .models.critic import DigiQCritic, DigiQCriticModelConfig
        from .trainers.critic_config import DigiQCriticConfig
        from .trainers.critic_trainer import DigiQCriticTrainer

        cfg = self.config
        extractor = self.load_extractor()
        data = self.featurized(extractor)
        dim = extractor.hidden_size
        critic = DigiQCritic(
            DigiQCriticModelConfig(q_input_dim=dim, v_input_dim=dim, hidden_size=cfg.critic_hidden_size)
        )
        args = DigiQCriticConfig(
            output_dir=str(cfg.path("critic")), max_steps=cfg.critic_steps,
            learning_rate=cfg.critic_learning_rate, per_device_train_batch_size=cfg.critic_batch_size,
            per_device_eval_batch_size=256, max_grad_norm=cfg.critic_max_grad_norm,
            gradient_accumulation_steps=cfg.critic_gradient_accumulation_steps, bf16=cfg.bf16,
            logging_steps=max(1, cfg.critic_steps // 30), eval_strategy="steps",
            eval_steps=max(1, cfg.critic_steps // 5), save_strategy="no", report_to=[], seed=cfg.seed,
            conservative_weight=cfg.critic_conservative_weight, alt_actions_column=ALT_ACTIONS_COLUMN,
            push_to_hub=cfg.push_to_hub,
            hub_model_id=f"{cfg.hub_model_prefix}-critic" if cfg.hub_model_prefix else None,
        )
        trainer = DigiQCriticTrainer(critic, args, train_dataset=data["train"], eval_dataset=data["test"],
                                     feature_extractor=extractor)
        trainer.train()
        metrics = trainer.evaluate()
        if self.state.is_main_process:
            _write_json(cfg.path("critic") / "eval_metrics.json", metrics)
            _write_json(cfg.path("critic") / "log_history.json", trainer.state.log_history)
        trainer.save_model()
        if cfg.push_to_hub:
            trainer.push_to_hub()
        self.state.wait_for_everyone()

    # ----------------------------------------------------------------- stage 5: actor
    def stage_actor(self) -> None:
        """Filtered BC (baseline) and Digi-Q Best-of-N, each a LoRA adapter on the base actor."""
        for method in METHODS:
            for seed in self.config.actor_seeds:
                if not (self.actor_path(method, seed) / "adapter_config.json").exists():
                    self._train_actor(method, seed)

    def actor_path(self, method: str, seed: int) -> Path:
        """Where the adapter of ``method`` trained with ``seed`` goes."""
        return self.config.path("actor") / method / f"seed{seed}"

    def _train_actor(self, method: str, seed: int) -> None:
        is_digiq = method == "digiq"
        self.train_actor("threshold" if is_digiq else "filtered_bc", self.actor_states(seed),
                         self.actor_path(method, seed), seed, push=self.config.push_to_hub and is_digiq)

    def train_actor(self, weighting: str, states: Dataset, out: Path, seed: int, push: bool = False) -> None:
        """Train one LoRA adapter on the base actor with the actor stage's settings and save it in
        ``out``, with its preparation (candidates, advantages, targets; no images) and statistics.
        Critic weightings use the run's critic and feature extractor."""
        from .best_of_n import uses_critic
        from .trainers.actor_config import BestOfNActorConfig
        from .trainers.actor_trainer import BestOfNActorTrainer

        cfg = self.config
        with_critic = uses_critic(weighting)
        args = BestOfNActorConfig(
            output_dir=str(out), weighting=weighting,
            num_candidates=cfg.num_candidates, temperature=cfg.candidate_temperature,
            advantage_threshold=cfg.advantage_threshold, anchor=cfg.anchor, anchor_weight=cfg.anchor_weight,
            max_steps=cfg.actor_steps,
            learning_rate=cfg.actor_learning_rate, per_device_train_batch_size=cfg.actor_batch_size,
            logging_steps=max(1, cfg.actor_steps // 10), save_strategy="no", report_to=[], seed=seed,
            bf16=cfg.bf16, push_to_hub=push,
            hub_model_id=f"{cfg.hub_model_prefix}-actor" if cfg.hub_model_prefix else None,
        )
        model, processor = self.load_base_actor()
        torch.manual_seed(seed)
        trainer = BestOfNActorTrainer(
            model, critic=str(cfg.path("critic")) if with_critic else None, args=args,
            train_dataset=states, processing_class=processor,
            feature_extractor=self.load_extractor() if with_critic else None,
        )
        trainer.train()
        if self.state.is_main_process:
            _write_json(out / "preparation_metrics.json", trainer.preparation_metrics)
            images = [c for c in trainer.prepared_dataset.column_names if c in ("image", "next_image")]
            trainer.prepared_dataset.remove_columns(images).save_to_disk(str(out / "preparation"))
        trainer.save_model()
        if push:
            trainer.push_to_hub()
        self.state.wait_for_everyone()

    def actor_states(self, seed: int) -> Dataset:
        """The training transitions of the actor: the whole training split, or whole episodes up
        to ``actor_max_states`` (the same states for every method)."""
        train = self.load_data()["train"]
        limit = self.config.actor_max_states
        if limit is None or len(train) <= limit:
            return train
        return take_episodes(train, limit, seed)

    # ----------------------------------------------------------------- stage 6: evaluation
    def stage_evaluate(self) -> None:
        """Success rates of base / filtered BC / Digi-Q on held-out goals; report and plots."""
        if self.state.is_main_process:
            self._evaluate()
        self.state.wait_for_everyone()

    def _evaluate(self) -> None:
        cfg = self.config
        offline = cfg.evaluation == "offline"
        probe, reference = self._probe()
        base_actions: list[str] = []
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, policy in self._trained_policies():
            score = self.score(policy)
            actions = greedy_actions(policy, probe)
            base_actions = base_actions or actions
            score["probe"] = {"changed_vs_base": changed_share(actions, base_actions),
                              "recall": action_kind_recall(actions, reference)}
            runs.setdefault(name, []).append(score)
            logger.info("%s: %s", name, {k: v for k, v in score.items() if k != "per_seed"})
        metric = "action_matching_accuracy" if offline else "success_rate"
        methods = {name: across_training_seeds(scores, metric) for name, scores in runs.items()}
        self.results.update(
            metric=metric, actor_seeds=list(cfg.actor_seeds),
            eval_split="test (offline action matching)" if offline else cfg.eval_split,
            num_eval_episodes=cfg.eval_episodes, seeds=[] if offline else list(cfg.eval_seeds),
            generalization_split=None if offline else cfg.generalization_split,
            probe_states=len(probe), methods=methods, behavior_data=self._behavior_stats(),
            critic={**_read_json(cfg.path("critic") / "eval_metrics.json"),
                    **({} if offline else self._critic_expert_ranking())},
            representation=_read_json(cfg.path("representation") / "metrics.json"),
        )

    def _probe(self) -> tuple[Dataset, list[str]]:
        """The forgetting probe: ``probe_states`` rows of the critic's test split (seeded), with the
        action each should get: the simulator expert's when the data was collected in the simulator
        (replayed, :func:`~digiq_trl.envs.collect.replay_expert_actions`), else the logged one."""
        from .envs.collect import replay_expert_actions

        test = self.load_data()["test"]
        rows = list(range(len(test)))
        random.Random(self.config.seed).shuffle(rows)
        rows = sorted(rows[: self.config.probe_states])
        if self.config.dataset is None:  # replay needs whole episodes: label them all, keep the probe's
            experts = replay_expert_actions(test, layout=self.config.layout)
            return test.select(rows), [experts[i] for i in rows]
        return test.select(rows), [test["action"][i] for i in rows]

    def _critic_expert_ranking(self) -> dict[str, float]:
        """Does the critic rank the simulator expert's action above random ones, on evaluation
        states the behavior policy visits?"""
        from .evaluation import critic_expert_ranking
        from .models.policy import VLMPolicy

        cfg = self.config
        if not (cfg.path("critic") / "model.safetensors").exists():
            return {}
        critic = self.load_critic()
        model, processor = self.load_base_actor()
        torch.manual_seed(cfg.seed)
        behavior = VLMPolicy(model, processor, temperature=cfg.behavior_temperature)
        return critic_expert_ranking(critic, self.load_extractor(), cfg.suite, behavior, split=cfg.eval_split,
                                     num_episodes=50, seed=cfg.seed, layout=cfg.layout)

    def score(self, policy: Any) -> dict[str, Any]:
        """How the evaluation stage scores one policy: simulator success on ``eval_split`` goals over
        every evaluation seed, or offline action matching with ``evaluation: offline``."""
        offline = self.config.evaluation == "offline"
        return self._score_offline(policy) if offline else self._score_in_simulator(policy)

    def _score_in_simulator(self, policy: Any) -> dict[str, Any]:
        """Greedy success rate on the evaluation goals over every evaluation seed (overall and per
        task kind), and on the generalization split."""
        from .evaluation import evaluate_policy, evaluate_policy_seeds

        cfg = self.config
        run = evaluate_policy_seeds(policy, cfg.suite, seeds=cfg.eval_seeds, split=cfg.eval_split,
                                    num_episodes=cfg.eval_episodes, layout=cfg.layout)
        score = {key: run[key] for key in ("success_rate", "stderr", "pooled_stderr", "num_episodes", "by_kind")}
        score["per_seed"] = [r["success_rate"] for r in run["per_seed"]]
        if cfg.generalization_split:
            other = evaluate_policy(policy, cfg.suite, split=cfg.generalization_split,
                                    num_episodes=cfg.eval_episodes, seed=cfg.eval_seeds[0], layout=cfg.layout)
            score["generalization"] = {key: other[key] for key in ("success_rate", "stderr", "by_kind")}
        return score

    def _score_offline(self, policy: Any) -> dict[str, Any]:
        """AitW action matching on the held-out split (real data: no device to play in)."""
        from .evaluation import action_matching_accuracy

        run = action_matching_accuracy(policy, self.load_data()["test"])
        return {"action_matching_accuracy": run["accuracy"], "stderr": run["stderr"],
                "valid_rate": run["valid_rate"], "accuracy_by_type": run["accuracy_by_type"]}

    def _trained_policies(self) -> Iterator[tuple[str, Any]]:
        """``(name, greedy VLMPolicy)`` for the base actor and each trained adapter found, one per
        training seed."""
        from peft import PeftModel

        from .models.policy import VLMPolicy

        model, processor = self.load_base_actor()
        yield "base", VLMPolicy(model, processor)
        for method in METHODS:
            for seed in self.config.actor_seeds:
                adapter = self.actor_path(method, seed)
                if (adapter / "adapter_config.json").exists():
                    base, processor = self.load_base_actor()
                    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()  # LoRA-free decoding
                    yield method, VLMPolicy(merged, processor)

    def _behavior_stats(self) -> dict[str, float]:
        """Size and success rate of the offline data (the behavior policy's own success), and how
        well the goal alone predicts success (the ceiling of the critic's V(s_0) AUROC)."""
        from .evaluation import goal_predictability_auroc

        data = self.load_data()
        firsts = [row for split in data.values()
                  for row in split.select_columns(["step_id", "goal", "trajectory_reward"]) if row["step_id"] == 0]
        successes = [r["trajectory_reward"] > 0 for r in firsts]
        return {
            "episodes": len(firsts),
            "transitions": sum(len(split) for split in data.values()),
            "success_rate": sum(successes) / max(1, len(firsts)),
            "goal_predictability_auroc": goal_predictability_auroc([r["goal"] for r in firsts], successes),
        }

    def write_outputs(self) -> None:
        """``results.json``, plots and ``report.md`` in ``output_dir`` (main process)."""
        from .report import plot_critic_losses, plot_success_rates, plot_values_by_step, render_report, write_results

        if not self.state.is_main_process or "methods" not in self.results:
            return
        out = Path(self.config.output_dir)
        self.results["timings_s"] = dict(self.timings)
        metric = self.results["metric"]
        plots = [plot_success_rates(self.results["methods"], out / f"{metric}.png", metric)]
        history = _read_json(self.config.path("critic") / "log_history.json")
        if history:
            plots.append(plot_critic_losses(history, out / "critic_losses.png"))
        if (self.config.path("critic") / "model.safetensors").exists():
            plots.append(plot_values_by_step(*self._critic_values(), out / "critic_values.png"))
        write_results(out / "results.json", self.results)
        (out / "report.md").write_text(render_report(self.results, plots))

    def _critic_values(self) -> tuple[list[int], dict[str, list[float]], list[bool]]:
        """max(Q1, Q2)(s, a) and max(V1, V2)(s) of the held-out steps, with episode success."""
        critic = self.load_critic()
        columns = ["q_features", "v_features", "step_id", "trajectory_reward"]
        test = self.featurized(self.load_extractor())["test"].select_columns(columns).with_format("torch")[:]
        with torch.no_grad():
            q = torch.maximum(*critic.q_values(test["q_features"].float()))
            v = torch.maximum(*critic.v_values(test["v_features"].float()))
        success = [r > 0 for r in test["trajectory_reward"].tolist()]
        return test["step_id"].tolist(), {"Q": q.flatten().tolist(), "V": v.flatten().tolist()}, success


def across_training_seeds(scores: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """One method's result from its runs, one per training seed.

    With a single run, its own figures (standard error across evaluation seeds). With several, the
    mean of the runs, the standard error of that mean across training seeds, ``per_seed`` the runs'
    values, the per-task-kind counts summed over the runs (``by_kind``), and every run in ``runs``.
    """
    if len(scores) == 1:
        return scores[0]
    values = [run[metric] for run in scores]
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    result = {metric: mean, "stderr": spread / math.sqrt(len(values)), "per_seed": values, "runs": scores}
    if all("by_kind" in run for run in scores):
        result["by_kind"] = sum_by_kind([run["by_kind"] for run in scores])
    return result


def threads_per_process() -> int:
    """The cores this process may run on, shared evenly among the processes on this machine
    (``LOCAL_WORLD_SIZE``, which ``accelerate launch`` and ``torchrun`` set)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def take_episodes(ds: Dataset, max_rows: int, seed: int) -> Dataset:
    """Whole episodes of ``ds`` in a seeded random order, as many as fit in ``max_rows`` rows."""
    import random

    spans: dict[str, list[int]] = {}
    for index, episode in enumerate(ds["episode_id"]):
        spans.setdefault(episode, []).append(index)
    episodes = list(spans)
    random.Random(seed).shuffle(episodes)
    rows: list[int] = []
    for episode in episodes:
        if len(rows) + len(spans[episode]) <= max_rows:
            rows.extend(spans[episode])
    return ds.select(sorted(rows))


ALT_ACTIONS_COLUMN = "alt_actions"
"""Held-out column of random alternative actions, for the critic's ranking metric."""


def add_random_alternatives(ds: Dataset, count: int, seed: int) -> Dataset:
    """Add ``alt_actions``: ``count`` uniformly random actions per state (seeded, reproducible)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    goals = ds["goal"]
    alternatives = [[format_action(random_action(rng, goal)) for _ in range(count)] for goal in goals]
    return ds.add_column(ALT_ACTIONS_COLUMN, alternatives)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}
