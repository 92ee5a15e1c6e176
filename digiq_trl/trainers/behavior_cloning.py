"""Behavior cloning of the base actor with ``trl.SFTTrainer``.

Digi-Q improves a *base actor* (AutoUI in the paper) that already emits valid actions. Offline and
on a CPU that actor is a tiny VLM behavior-cloned on expert steps of the simulated device. The
transitions are turned into TRL's conversational prompt-completion vision format with the shared
prompt, so only the completion (the action string and its end-of-turn token) carries labels, whatever
the model's chat template (no ``{% generation %}`` markers needed: real Qwen2-VL templates lack them).

Example:
    >>> from digiq_trl.trainers.behavior_cloning import behavior_clone
    >>> from digiq_trl.models.tiny import tiny_qwen2_vl
    >>> model, processor = tiny_qwen2_vl()
    >>> actor = behavior_clone(model, processor, transitions, "out/base-actor", max_steps=600)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset, Features, Image, List, Value
from transformers import PreTrainedModel, ProcessorMixin
from trl import SFTConfig, SFTTrainer

from ..prompts import build_messages


def _to_conversation(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A batch of transitions as ``prompt`` / ``completion`` messages and ``images``."""
    prompts, completions = [], []
    for goal, history, action in zip(batch["goal"], batch["history"], batch["action"]):
        user, assistant = build_messages(goal, history, action)
        prompts.append([user])
        completions.append([assistant])
    return {"prompt": prompts, "completion": completions, "images": [[image] for image in batch["image"]]}


def transitions_to_sft(dataset: Dataset) -> Dataset:
    """Canonical transitions -> TRL conversational prompt-completion vision rows
    ``{"prompt", "completion", "images"}``.

    The screenshot is passed through as encoded bytes (not decoded and re-encoded), so the
    conversion costs no image work, whatever the number of steps.
    """
    raw = dataset.select_columns(["goal", "history", "action", "image"]).cast_column("image", Image(decode=False))
    converted = raw.map(_to_conversation, batched=True, remove_columns=raw.column_names)
    return converted.cast_column("images", List(Image()))


def behavior_clone(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    dataset: Dataset,
    output_dir: str,
    max_steps: int = 600,
    learning_rate: float = 2e-3,
    batch_size: int = 32,
    seed: int = 0,
    use_cpu: bool = True,
    peft_config: Any = None,
    merge_adapter: bool = False,
    report_to: str | list[str] | None = None,
    **sft_kwargs: Any,
) -> PreTrainedModel:
    """Train ``model`` to imitate the actions of ``dataset``; saves the actor to ``output_dir``.

    Loss is on the completion only (the action and the chat template's end of turn), AdamW with a
    cosine schedule.

    Args:
        model: the VLM to train (any ``AutoModelForImageTextToText`` model).
        processor: its processor (any chat template).
        dataset: canonical transitions, or rows already in the ``{"prompt", "completion", "images"}``
            format.
        output_dir: where the trained model and processor are saved.
        max_steps: optimizer steps.
        learning_rate: peak learning rate (2e-3 suits the tiny random-init models; use ~1e-5 to
            1e-4 for pretrained VLMs).
        batch_size: examples per step.
        seed: seed of shuffling and initialization of new parameters.
        use_cpu: train on the CPU even when an accelerator is present.
        peft_config: an optional ``peft`` config (e.g. ``LoraConfig``) to train adapters only.
        merge_adapter: with ``peft_config``, merge the trained adapter and save (and return) a plain
            model, loadable without peft; otherwise the adapter alone is saved.
        report_to: where the trainer logs besides the console, as in ``TrainingArguments``
            (``"tensorboard"``, ``["wandb"]``, ...); None logs nowhere else.
        **sft_kwargs: further ``trl.SFTConfig`` fields (override the defaults above).

    Returns:
        The trained model (the peft-wrapped model when ``peft_config`` is given and not merged).
    """
    if "completion" not in dataset.column_names:
        dataset = transitions_to_sft(dataset)
    config = {
        "output_dir": output_dir,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, max_steps // 30),
        "per_device_train_batch_size": batch_size,
        "completion_only_loss": True,
        "max_length": None,
        "activation_checkpointing": False,
        "bf16": False,
        "use_cpu": use_cpu,
        "report_to": report_to if report_to is not None else [],
        "save_strategy": "no",
        "logging_steps": max(1, max_steps // 20),
        "dataloader_num_workers": 0,
        "seed": seed,
        **sft_kwargs,
    }
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**config),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.train()
    if merge_adapter and peft_config is not None:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(output_dir)
        return merged
    trainer.save_model(output_dir)
    return trainer.model


DEMONSTRATION_FEATURES = Features(
    {"goal": Value("string"), "history": Value("string"), "image": Image(), "action": Value("string")}
)
"""Columns of :func:`expert_demonstrations` (the subset of the transition schema BC reads)."""


def expert_demonstrations(
    env_id: str = "digiq_trl/Phone-general-v0",
    num_episodes: int = 2000,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 64,
    **env_kwargs: Any,
) -> Dataset:
    """States visited by a noisy expert, each labelled with the *expert's* action.

    The random actions (probability ``noise``) put the phone into off-path states (wrong app,
    wrong query, scrolled list) that a pure expert never visits; labelling every state with the
    expert's action teaches the actor to recover from them, which a clone of clean expert
    trajectories cannot do.

    Args:
        env_id: a registered simulated-phone id (``digiq_trl/Phone-<suite>-v0``).
        num_episodes: episodes to play.
        noise: probability of a random action at each step (the recorded label stays the expert's).
        seed: seeds the episodes and the noise.
        batch_size: phones stepped in lockstep.
        **env_kwargs: passed to ``gymnasium.make`` (e.g. ``split``, ``layout``).
    """
    from ..envs import NoisyExpertPolicy, run_episodes

    policy = NoisyExpertPolicy(noise=noise, seed=seed)
    rows: dict[str, list[Any]] = {name: [] for name in DEMONSTRATION_FEATURES}
    for step in run_episodes(env_id, policy, num_episodes, seed=seed, batch_size=batch_size, **env_kwargs):
        rows["goal"].append(step.observation["goal"])
        rows["history"].append(step.observation["history"])
        rows["image"].append(step.observation["image"])
        rows["action"].append(step.info["expert_action"])
    return Dataset.from_dict(rows, features=DEMONSTRATION_FEATURES)
