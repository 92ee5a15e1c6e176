"""One set of LoRA defaults for the actor and representation trainers, on the language model only."""

from peft import get_peft_model

from digiq_trl.models.tiny import tiny_llava, tiny_qwen2_vl
from digiq_trl.trainers.actor_trainer import _with_adapter
from digiq_trl.trainers.lora import LORA_TARGET_MODULES, default_lora_config
from digiq_trl.trainers.representation_config import RepresentationConfig


FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "task_type")


def test_actor_and_representation_defaults_agree(tmp_path) -> None:
    representation = RepresentationConfig(output_dir=str(tmp_path), use_cpu=True).lora_config()
    actor = _with_adapter(tiny_qwen2_vl()[0], None).peft_config["default"]  # the actor's adapter without peft_config
    assert {f: getattr(actor, f) for f in FIELDS} == {f: getattr(representation, f) for f in FIELDS}
    assert {f: getattr(actor, f) for f in FIELDS} == {f: getattr(default_lora_config(), f) for f in FIELDS}


def test_vision_towers_get_no_adapter() -> None:
    for build in (tiny_llava, tiny_qwen2_vl):
        model = get_peft_model(build()[0], default_lora_config())
        adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_parameters() if ".lora_A" in name}
        assert adapted, build.__name__
        assert all("language_model" in name for name in adapted), build.__name__
        assert {name.split(".")[-1] for name in adapted} == set(LORA_TARGET_MODULES), build.__name__
