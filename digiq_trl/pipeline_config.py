"""Options of a whole Digi-Q run, and the arguments each stage's trainer gets from them.

Every field of :class:`DigiQPipelineConfig` is a command-line flag and a YAML key of
``examples/train.py`` (``digiq-trl train``). The methods turn them into each stage's trainer
arguments, so no stage hides a constant; :mod:`digiq_trl.fingerprints` names the fields each
stage's output depends on (its manifest, :mod:`digiq_trl.artifacts`): a changed field recomputes
that stage and every later one.

Stages, in order (the paper's four are numbered 1-4 everywhere; the others are named):
``base_actor`` (the policy to improve), ``data`` (offline transitions), ``representation`` (stage 1:
actionability fine-tuning), ``features`` (stage 2: frozen-VLM features), ``critic`` (stage 3: TD
learning), ``actor`` (stage 4: Best-of-N extraction, and the filtered-BC baseline), ``evaluate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .discount import DEFAULT_GAMMA
from .envs.phone import PHONES
from .envs.tasks import SPLITS
from .models.critic_text import TEXT_LAYOUTS, TEXT_POOLINGS
from .pipeline_checks import check_options, fail
from .prompts import FEATURE_INPUTS


STAGES = ("base_actor", "data", "representation", "features", "critic", "actor", "evaluate")
METHODS = ("filtered_bc", "digiq")
ALT_ACTIONS_COLUMN = "alt_actions"
"""Column of random alternative actions per state that a run adds to its data: the critic's ranking
metric and the conservative penalty's negatives."""
METHOD_WEIGHTINGS = {"filtered_bc": "filtered_bc", "digiq": "threshold"}
"""How each method's actor is trained (``BestOfNActorConfig.weighting``)."""

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
    activation_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in backward (behavior cloning, representation, actor): less "
                  "memory for a real VLM, more time; no effect on the numbers."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Largest screenshot, in pixels, after a Qwen2-VL-family processor resizes it (one image "
                  "token per 28x28 pixels; e.g. 1003520 = 1280 tokens). None: the processor's own setting."},
    )
    min_pixels: int | None = field(
        default=None, metadata={"help": "Smallest screenshot, in pixels, after resizing (see max_pixels)."}
    )
    model_dtype: str | None = field(
        default=None,
        metadata={"help": "dtype every VLM of the run is loaded in (base actor, feature backbone, evaluated actors): "
                  "auto (the checkpoint's own), bfloat16, float16 or float32. None: transformers' default."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel of every VLM the run loads: sdpa, flash_attention_2 (needs flash-attn and "
                  "bfloat16/float16), flash_attention_3, flex_attention or eager. None: transformers' default."},
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Further keyword arguments of from_pretrained for every VLM the run loads, a YAML mapping "
                  "or a JSON object on the command line, e.g. 4-bit loading: {\"quantization_config\": "
                  "{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true}} (needs bitsandbytes and a GPU), "
                  "or {\"device_map\": \"auto\"} to shard a model over the GPUs (such a model stays where it "
                  "is placed). dtype and attn_implementation go in their own options."},
    )
    layout: str = field(
        default="fixed",
        metadata={"help": "Simulator layout: fixed (strong cues, for tiny models) or random (for pretrained VLMs)."},
    )
    phone: str = field(
        default="target",
        metadata={"help": "Simulated phone of the offline data and the evaluation: target (version drift and "
                  "interruptions the base actor's demonstrations never showed: the paper's regime) or source "
                  "(the phone the shipped base actor was cloned on)."},
    )
    drift: bool | None = field(
        default=None,
        metadata={"help": "Override the phone's version drift (moved icons, reordered Settings, search fields behind "
                  "an icon). None: the phone's own (target on, source off)."},
    )
    interruption_probability: float | None = field(
        default=None,
        metadata={"help": "Override the share of episodes with an interruption (consent sheet, ad, permission or "
                  "rating dialog). None: the phone's own."},
    )
    # base actor
    base_actor: str | None = field(
        default="digiq-trl/phone-actor-tiny",
        metadata={"help": "Hub id or path of the VLM actor to improve. Default: the tiny Qwen2-VL shipped with "
                  "digiq-trl, behavior-cloned on source-phone demonstrations (examples/configs/phone_actor_tiny.yaml). "
                  "None: a random-init tiny Qwen2-VL behavior-cloned in this run (bc_* options)."},
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
                  "(what held-out goals need; it takes several times the default bc_steps: docs/experiments.md)."},
    )
    bc_steps: int = field(
        default=0,
        metadata={"help": "Behavior-cloning steps of the base actor, on the offline dataset's training episodes when "
                  "`dataset` is given (so the actor speaks the action format, as AutoUI was trained on AitW), else on "
                  "the simulator's noisy-expert demonstrations. A given base_actor trains a LoRA adapter, merged; "
                  "the tiny default trains all weights. 0 keeps a given base_actor as it is."},
    )
    bc_learning_rate: float = field(
        default=2e-3, metadata={"help": "Behavior-cloning peak learning rate (2e-3 for the tiny model, ~1e-4 for a VLM)."}
    )
    bc_batch_size: int = field(default=32, metadata={"help": "Behavior-cloning batch size per device."})
    bc_gradient_accumulation_steps: int = field(default=1, metadata={"help": "Behavior-cloning gradient accumulation."})
    # offline data
    dataset: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of canonical transitions. Default: collect them with the base actor."},
    )
    collect_episodes: int = field(default=400, metadata={"help": "Episodes the base actor plays to make the data."})
    behavior_temperature: float = field(
        default=0.8, metadata={"help": "Sampling temperature of the base actor while collecting (the paper: 0.8; 0: greedy)."}
    )
    gamma: float = field(
        default=DEFAULT_GAMMA,
        metadata={"help": "Discount of the collected data's mc_return and of the critic's TD targets (the paper: "
                  "0.95; a given dataset keeps the mc_return it was converted with)."},
    )
    test_size: float = field(default=0.2, metadata={"help": "Fraction of episodes held out for critic evaluation."})
    # representation
    representation_steps: int = field(default=100, metadata={"help": "Actionability fine-tuning steps (LoRA)."})
    representation_learning_rate: float = field(default=2e-3, metadata={"help": "Actionability learning rate."})
    representation_batch_size: int = field(default=16, metadata={"help": "Actionability batch size per device."})
    representation_gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Actionability gradient accumulation."}
    )
    representation_model: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of a finished representation model (stage 1's output, e.g. a pushed "
                  "<prefix>-representation) to use instead of training one: the representation stage is skipped "
                  "and the features come from it."},
    )
    representation_save_steps: int = field(
        default=500,
        metadata={"help": "Representation checkpoint interval in steps (an interrupted run resumes from the last)."},
    )
    # features and critic
    feature_layer: int | None = field(
        default=-1,
        metadata={"help": "VLM layer of the features, 1-based; negative counts from the end (-1: the last, as the "
                  "reference's host.py); null: the middle layer."},
    )
    feature_input: str = field(
        default="actionability",
        metadata={"help": "Input the critic's Q features come from: actionability (the stage-1 input: the "
                  "screenshot with the action drawn, the question, the answer tokens; the reference) or "
                  "actor_prompt (the action's tokens after the actor's prompt)."},
    )
    feature_pooling: str = field(default="mean", metadata={"help": "Pooling over action tokens: mean or last."})
    critic_hidden_size: int = field(default=256, metadata={"help": "Hidden width of the Q and V heads."})
    critic_text_encoder: str = field(
        default="tiny",
        metadata={"help": "Text encoder the critic reads goal, previous action and action through, trained with "
                  "the heads: tiny (a small BERT over the base actor's tokenizer), a Hub id (e.g. roberta-base, "
                  "as the reference), or none."},
    )
    critic_text_match: bool = field(
        default=True,
        metadata={"help": "Also compare the typed text with the goal token by token (DigiQCriticModelConfig."
                  "text_match; not in the reference)."},
    )
    critic_text_layout: str = field(
        default="joint",
        metadata={"help": "joint (one sequence goal + previous action + action) or separate (the reference: each "
                  "part encoded alone)."},
    )
    critic_text_pooling: str = field(
        default="mean",
        metadata={"help": "How a text's token states become one vector: mean (over its tokens) or pooler (the "
                  "encoder's pooled first token, as the reference reads RoBERTa's pooler_output)."},
    )
    critic_model: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of a trained Digi-Q critic to use instead of training one: the "
                  "representation and critic stages are skipped and the features come from the critic's own "
                  "backbone (its config's backbone_model_id, checked against the weights digest it records)."},
    )
    critic_steps: int = field(default=500, metadata={"help": "Critic optimizer steps."})
    critic_learning_rate: float = field(default=1e-3, metadata={"help": "Critic learning rate."})
    critic_batch_size: int = field(default=64, metadata={"help": "Critic batch size per device."})
    critic_gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Critic gradient accumulation (the paper: batch 32 x 4)."}
    )
    critic_max_grad_norm: float = field(default=1.0, metadata={"help": "Critic gradient clipping (0: none)."})
    critic_v_target_combine: str = field(
        default="min",
        metadata={"help": "V targets from the target Q heads: min (both V heads regress to min(Qbar1, Qbar2), and "
                  "the advantage is min(Q1, Q2) - max(V1, V2)) or independent (the reference: V_i to Qbar_i, "
                  "advantage max(Q1, Q2) - max(V1, V2))."},
    )
    critic_save_steps: int = field(
        default=500, metadata={"help": "Critic checkpoint interval in steps (an interrupted run resumes from the last)."}
    )
    ranking_alternatives: int = field(
        default=4,
        metadata={"help": "Random alternative actions per state (alt_actions): the held-out ranking metric, and "
                  "the conservative penalty's negatives in training."},
    )
    critic_conservative_weight: float = field(
        default=0.1,
        metadata={"help": "Conservative penalty on Q of random alternative actions (DigiQCriticConfig."
                  "conservative_weight); 0 is the paper's critic (a comparison: docs/experiments.md)."},
    )
    # actor
    num_candidates: int = field(
        default=8, metadata={"help": "Best-of-N: candidate actions per state (the paper: 16; 8 keeps the CPU default short)."}
    )
    candidate_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the candidates."})
    min_candidate_count: int = field(
        default=1,
        metadata={"help": "Best-of-N: a sampled candidate competes only if drawn at least this many times of N "
                  "(BestOfNActorConfig.min_candidate_count; 1 is the reference)."},
    )
    candidate_resamples: int = field(
        default=0,
        metadata={"help": "Best-of-N: rounds of resampling candidates that do not parse (BestOfNActorConfig."
                  "invalid_resamples; the reference: 3)."},
    )
    candidate_source: str = field(
        default="policy",
        metadata={"help": "Best-of-N candidates: policy (sampled from the base actor), dataset (the data's "
                  "candidate_actions column, e.g. the reference .pt files' action_list), or both."},
    )
    advantage_threshold: float = field(
        default=0.05,
        metadata={"help": "Best-of-N: train on states with A > this (the paper: 0.10 General, 0.05 WebShop, for "
                  "data with 20-30 %% success; advantages are smaller when successes are rarer)."},
    )
    actor_steps: int = field(default=200, metadata={"help": "Actor (LoRA) optimizer steps per method and seed."})
    actor_learning_rate: float = field(default=1e-3, metadata={"help": "Actor (LoRA) learning rate."})
    actor_batch_size: int = field(default=32, metadata={"help": "Actor batch size per device."})
    actor_gradient_accumulation_steps: int = field(default=1, metadata={"help": "Actor gradient accumulation."})
    actor_save_steps: int = field(
        default=500,
        metadata={"help": "Actor checkpoint interval in steps (an interrupted run resumes the adapter from the last; "
                  "the Best-of-N preparation is cached)."},
    )
    actor_max_grad_norm: float = field(default=1.0, metadata={"help": "Actor gradient clipping (the paper: 0.01; 0: none)."})
    actor_token_probability_clamp: list[float] | None = field(
        default=None,
        metadata={"help": "low high: the actor loss clamps each target token's probability to [low, high] "
                  "(BestOfNActorConfig.token_probability_clamp; the reference: 0.001 0.99)."},
    )
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
                  "successful episodes of the data's held-out split (real data, no device; matching the steps of "
                  "failed episodes would reward copying a failing policy)."},
    )
    eval_split: str = field(
        default="test",
        metadata={"help": "Goal split of the evaluation: test (the published test goals, as the paper reports "
                  "AitW; they also occur in train), train, or heldout."},
    )
    eval_episodes: int = field(default=100, metadata={"help": "Evaluation episodes per method and seed."})
    eval_goals: str = field(
        default="random",
        metadata={"help": "Which goals the evaluation plays: random (drawn from each evaluation seed) or first (the "
                  "split's first eval_episodes goals in order, the paper's protocol: the first 96 test goals)."},
    )
    eval_temperature: float = field(
        default=0.0,
        metadata={"help": "Sampling temperature of the evaluated actors (0: greedy decoding; the paper samples at 0.8)."},
    )
    rollout_batch_size: int = field(
        default=200,
        metadata={"help": "Phones played in lockstep, and states per decoding batch, when the base actor collects "
                  "data and when actors are evaluated (a larger batch amortizes each decoding step; lower it to "
                  "bound memory with a large VLM)."},
    )
    eval_seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Evaluation seeds (each plays eval_episodes episodes)."}
    )
    generalization_split: str | None = field(
        default="heldout",
        metadata={"help": "A second goal split reported as a generalization column (one seed, eval_episodes "
                  "episodes): heldout goals no training stage saw. none skips it."},
    )
    probe_states: int = field(
        default=200,
        metadata={"help": "States of the forgetting probe: every actor's greedy actions are compared, per action "
                  "class, with the simulator expert's on states a noisy expert visits (the logged actions of the "
                  "test split for a given dataset), and with the base actor's (the share of actions changed)."},
    )
    ddp_timeout: int = field(
        default=7200,
        metadata={"help": "Seconds a process waits for the others under accelerate launch --num_processes K (stages "
                  "such as feature caching run on the main process while the others wait)."},
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata={"help": "Where the trainers log besides the console, as in TrainingArguments (tensorboard, wandb, "
                  "...); none by default."},
    )
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Push the representation model, the critic (its config naming the representation's Hub "
                  "id as its feature backbone) and the Digi-Q actor adapter to the Hub."},
    )
    hub_model_prefix: str | None = field(
        default=None,
        metadata={"help": "Hub repo prefix: pushes <prefix>-representation, <prefix>-critic and <prefix>-actor."},
    )

    def __post_init__(self) -> None:
        """Refuse any invalid option before any work (:mod:`digiq_trl.pipeline_checks`: one line that
        names the option, the value and what is allowed)."""
        if self.generalization_split in ("", "none", "None"):  # how a command line spells None
            self.generalization_split = None
        self.model_init_kwargs = _mapping_option("model_init_kwargs", self.model_init_kwargs)
        check_options(self)
        lookups = {"phone": (self.phone, list(PHONES)), "feature_input": (self.feature_input, list(FEATURE_INPUTS)),
                   "critic_text_pooling": (self.critic_text_pooling, list(TEXT_POOLINGS)),
                   "critic_text_layout": (self.critic_text_layout, list(TEXT_LAYOUTS)),
                   "eval_split": (self.eval_split, list(SPLITS))}
        for name, (value, allowed) in lookups.items():
            if value not in allowed:
                raise fail(name, value, f"one of {', '.join(allowed)}")
        if self.generalization_split is not None and self.generalization_split not in SPLITS:
            raise fail("generalization_split", self.generalization_split, f"one of {', '.join(SPLITS)}, or none")
        unknown = sorted(set(self.skip_stages) - set(STAGES))
        if unknown:
            raise fail("skip_stages", unknown, f"stages among {', '.join(STAGES)}")
        if self.base_actor is None and self.bc_steps <= 0:
            raise fail("bc_steps", self.bc_steps, "an integer >= 1 without a base_actor (the tiny default actor "
                       "starts untrained)")
        if self.push_to_hub and not self.hub_model_prefix:
            raise fail("hub_model_prefix", self.hub_model_prefix, "a Hub prefix such as 'my-user/digiq-general' "
                       "with push_to_hub")

    @property
    def env_id(self) -> str:
        """The simulator's Gymnasium id for the chosen suite and phone."""
        return f"digiq_trl/Phone-{self.suite}{'-target' if self.phone == 'target' else ''}-v0"

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The simulated phone's settings for data, evaluation and diagnosis (``PhoneEnv`` arguments)."""
        return {"layout": self.layout, "phone": self.phone, "drift": self.drift,
                "interruption_probability": self.interruption_probability}

    @property
    def phone_settings(self) -> dict[str, Any]:
        """The phone of the data and of the evaluation, with its effective drift and interruptions
        (what ``results.json`` records)."""
        settings = {**PHONES[self.phone], **{k: v for k, v in (("drift", self.drift),
                    ("interruption_probability", self.interruption_probability)) if v is not None}}
        return {"data_phone": self.phone, "eval_phone": self.phone, **settings}

    def path(self, stage: str) -> Path:
        """The folder of one stage's output."""
        return Path(self.output_dir) / stage

    # ------------------------------------------------------------------ stage trainer arguments
    def representation_args(self, output_dir: str | Path) -> Any:
        """:class:`~digiq_trl.trainers.representation_config.RepresentationConfig` of stage 1."""
        from .trainers.representation_config import RepresentationConfig

        return RepresentationConfig(
            output_dir=str(output_dir), max_steps=self.representation_steps,
            learning_rate=self.representation_learning_rate, per_device_train_batch_size=self.representation_batch_size,
            merge_adapter=True, eval_fraction=0.2, balance=True, seed=self.seed,
            gradient_accumulation_steps=self.representation_gradient_accumulation_steps,
            logging_steps=max(1, self.representation_steps // 10), save_strategy="steps",
            save_steps=self.representation_save_steps, save_total_limit=1, report_to=self.report_to,
            bf16=self.bf16, activation_checkpointing=self.activation_checkpointing,
            push_to_hub=self.push_to_hub, hub_model_id=self.hub_id("representation"),
        )

    def critic_args(self, output_dir: str | Path) -> Any:
        """:class:`~digiq_trl.trainers.critic_config.DigiQCriticConfig` of stage 3 (checkpoints every
        ``critic_save_steps``, so an interrupted run resumes)."""
        from .trainers.critic_config import DigiQCriticConfig

        return DigiQCriticConfig(
            output_dir=str(output_dir), max_steps=self.critic_steps, learning_rate=self.critic_learning_rate,
            per_device_train_batch_size=self.critic_batch_size, per_device_eval_batch_size=4 * self.critic_batch_size,
            max_grad_norm=self.critic_max_grad_norm, gradient_accumulation_steps=self.critic_gradient_accumulation_steps,
            bf16=self.bf16, logging_steps=max(1, self.critic_steps // 30), eval_strategy="steps",
            eval_steps=max(1, self.critic_steps // 5), save_strategy="steps", save_steps=self.critic_save_steps,
            save_total_limit=1, report_to=self.report_to, seed=self.seed,
            conservative_weight=self.critic_conservative_weight, alt_actions_column=ALT_ACTIONS_COLUMN,
            v_target_combine=self.critic_v_target_combine, gamma=self.gamma,
            push_to_hub=self.push_to_hub, hub_model_id=self.hub_id("critic"),
        )

    def actor_args(self, weighting: str, output_dir: str | Path, seed: int, preparation_cache_dir: str | Path,
                   push: bool = False) -> Any:
        """:class:`~digiq_trl.trainers.actor_config.BestOfNActorConfig` of stage 4 for ``weighting``
        (Best-of-N preparations cached in ``preparation_cache_dir``, shared by methods and seeds)."""
        from .trainers.actor_config import BestOfNActorConfig

        return BestOfNActorConfig(
            output_dir=str(output_dir), weighting=weighting, num_candidates=self.num_candidates,
            temperature=self.candidate_temperature, min_candidate_count=self.min_candidate_count,
            invalid_resamples=self.candidate_resamples,
            advantage_threshold=self.advantage_threshold,
            anchor=self.anchor, anchor_weight=self.anchor_weight, candidate_source=self.candidate_source,
            max_steps=self.actor_steps,
            learning_rate=self.actor_learning_rate, per_device_train_batch_size=self.actor_batch_size,
            gradient_accumulation_steps=self.actor_gradient_accumulation_steps, max_grad_norm=self.actor_max_grad_norm,
            token_probability_clamp=self.actor_token_probability_clamp,
            activation_checkpointing=self.activation_checkpointing,
            preparation_cache_dir=str(preparation_cache_dir),
            logging_steps=max(1, self.actor_steps // 10), save_strategy="steps", save_steps=self.actor_save_steps,
            save_total_limit=1, report_to=self.report_to, seed=seed,
            bf16=self.bf16, push_to_hub=push, hub_model_id=self.hub_id("actor"),
        )

    @property
    def processor_kwargs(self) -> dict[str, int]:
        """``max_pixels`` / ``min_pixels`` where set, for every processor the run loads."""
        return {name: getattr(self, name) for name in ("max_pixels", "min_pixels") if getattr(self, name) is not None}

    @property
    def model_load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained`` for every VLM the run loads
        (:meth:`RunArtifacts.load_model <digiq_trl.artifacts.RunArtifacts.load_model>`):
        ``model_init_kwargs``, ``model_dtype`` as ``dtype`` and ``attn_implementation``, each where
        set (none set: transformers' defaults, the loads of earlier versions)."""
        named = {"dtype": self.model_dtype, "attn_implementation": self.attn_implementation}
        return {**(self.model_init_kwargs or {}), **{key: value for key, value in named.items() if value is not None}}

    def hub_id(self, artifact: str) -> str | None:
        """``<hub_model_prefix>-<artifact>``, where artifacts are pushed."""
        return f"{self.hub_model_prefix}-{artifact}" if self.hub_model_prefix else None


def _mapping_option(name: str, value: Any) -> dict[str, Any] | None:
    """A mapping option as a dict: given as one (Python, YAML) or as a JSON object (command line);
    null or an empty string is None."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "none", "None", "null")):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, dict):
        raise fail(name, value, 'a mapping (a JSON object on the command line, e.g. \'{"device_map": "auto"}\'), '
                   "or null")
    return value
