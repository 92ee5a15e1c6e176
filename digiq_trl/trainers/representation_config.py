"""Configuration of representation fine-tuning (Digi-Q stage 1, the actionability task)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import LoraConfig
from trl import SFTConfig

from ..representation import DEFAULT_DOWNSCALE, DEFAULT_THRESHOLD
from .lora import LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGET_MODULES, default_lora_config


@dataclass
class RepresentationConfig(SFTConfig):
    r"""Arguments of representation fine-tuning, on top of ``trl.SFTConfig``.

    The VLM learns to answer "will this action change the screen?" (see
    :mod:`digiq_trl.representation`) with LoRA by default; the loss is on the answer only (the
    dataset is in prompt-completion form, so ``completion_only_loss`` applies).

    Changed ``SFTConfig`` defaults: ``learning_rate`` 2e-4 (LoRA), activation (gradient)
    checkpointing off (TRL turns it on; it only slows small models down: pass
    ``activation_checkpointing=True`` for large ones), and ``max_length`` None (a full-resolution
    phone screenshot alone is ~3,300 Qwen2-VL image tokens: TRL's 1024 would cut its placeholders).
    """

    learning_rate: float = field(default=2e-4, metadata={"help": "Initial AdamW learning rate."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Longest tokenized example (None: no truncation; screenshots are many image tokens)."},
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Deprecated alias of `activation_checkpointing` (recompute activations in backward to save "
            "memory); unset means off."
        },
    )
    change_threshold: float = field(
        default=DEFAULT_THRESHOLD,
        metadata={
            "help": "A step is labelled 'Yes' (screen changed) when the mean squared pixel difference of its "
            "quarter-size screenshots (0..255 scale) is strictly above this (Digi-Q: 30)."
        },
    )
    screen_downscale: int = field(
        default=DEFAULT_DOWNSCALE,
        metadata={"help": "Each side of the screenshots is divided by this before comparing (4: quarter-size)."},
    )
    balance: bool = field(
        default=False,
        metadata={"help": "Down-sample the majority class to the size of the minority class."},
    )
    eval_fraction: float = field(
        default=0.2,
        metadata={"help": "Fraction of episodes held out to measure Yes/No accuracy (0 disables)."},
    )
    use_peft: bool = field(
        default=True, metadata={"help": "Train LoRA adapters (True) or all weights (False)."}
    )
    lora_r: int = field(default=LORA_R, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=LORA_ALPHA, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=LORA_DROPOUT, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGET_MODULES),
        metadata={
            "help": "Names of the language model's modules that get LoRA adapters (the vision tower never "
            "does, whatever its modules are called)."
        },
    )
    merge_adapter: bool = field(
        default=True,
        metadata={
            "help": "Save the model with the LoRA weights merged in (loads like any model), or the adapter "
            "only (load it on top of the base model)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.screen_downscale < 1:
            raise ValueError(f"screen_downscale must be >= 1, got {self.screen_downscale}")

    def lora_config(self) -> LoraConfig:
        """The LoRA configuration these arguments describe (:func:`~digiq_trl.trainers.lora.default_lora_config`)."""
        return default_lora_config(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)
