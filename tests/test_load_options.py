"""The options a GPU user expects (issue 22, item 6): how every VLM of a run is loaded (dtype,
attention kernel, further ``from_pretrained`` arguments such as a quantization config),
``report_to`` in behavior cloning, and model cards that name the critic's backbone and no made-up
dataset when a push names none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForImageTextToText

from digiq_trl.artifacts import RunArtifacts
from digiq_trl.commands.train import make_parser
from digiq_trl.fingerprints import STAGE_FIELDS, stage_fingerprint
from digiq_trl.models.pretrained import resolve_pretrained
from digiq_trl.pipeline import DigiQPipeline
from digiq_trl.pipeline_checks import InvalidOptionError
from digiq_trl.pipeline_config import DigiQPipelineConfig


ACTOR = "digiq-trl/phone-actor-tiny"
OPTIONS = {"model_dtype": "bfloat16", "attn_implementation": "eager", "model_init_kwargs": {"use_safetensors": True}}


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ``AutoModelForImageTextToText.from_pretrained`` call."""
    calls: list[dict[str, Any]] = []
    load = AutoModelForImageTextToText.from_pretrained

    def recording(name_or_path: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return load(name_or_path, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", recording)
    return calls


def _every_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> list[torch.nn.Module]:
    """The models of every load of a run with ``options``: base actor, an actor with its adapter
    merged, the feature extractor's backbone, behavior cloning's and the representation stage's start."""
    from peft import get_peft_model

    import digiq_trl.trainers.representation_trainer as representation
    from digiq_trl.trainers.lora import default_lora_config

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForImageTextToText.from_pretrained(resolve_pretrained(ACTOR), **OPTIONS["model_init_kwargs"]),
                   default_lora_config()).save_pretrained(adapter)
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), base_actor=ACTOR, **options)
    artifacts = RunArtifacts(config)
    models = [artifacts.load_base_actor()[0], artifacts.load_actor(adapter)[0], artifacts.extractor().model]
    models.append(DigiQPipeline(DigiQPipelineConfig(**{**vars(config), "bc_steps": 1}))._untrained_actor()[0])
    monkeypatch.setattr(representation, "train_representation", lambda model, *args, **kwargs: models.append(model) or {})
    DatasetDict(train=Dataset.from_dict({"step_id": [0]})).save_to_disk(str(artifacts.path("data")))
    DigiQPipeline(config)._fine_tune_representation()
    return models


def test_every_model_load_of_a_run_honours_dtype_attention_and_init_kwargs(tmp_path, monkeypatch, loads) -> None:
    models = _every_load(tmp_path, monkeypatch, **OPTIONS)
    assert len(models) == 5 and len(loads) == 1 + 5
    for model in models:
        assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    assert all(call == {"use_safetensors": True, "dtype": "bfloat16", "attn_implementation": "eager"}
               for call in loads[1:])


def test_without_the_options_a_run_loads_as_before(tmp_path, monkeypatch, loads) -> None:
    """None everywhere: from_pretrained with no arguments, transformers' defaults."""
    _every_load(tmp_path, monkeypatch)
    assert loads[1:] == [{}] * 5
    assert DigiQPipelineConfig().model_load_kwargs == {}


def test_the_options_are_flags_and_yaml_keys(tmp_path: Path) -> None:
    quantized = '{"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true}}'
    config, _ = make_parser().parse_args_and_config(["--model_dtype", "bfloat16", "--attn_implementation", "sdpa",
                                                     "--model_init_kwargs", quantized])
    assert config.model_load_kwargs == {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True},
                                        "dtype": "bfloat16", "attn_implementation": "sdpa"}
    yaml = tmp_path / "run.yaml"
    yaml.write_text("model_dtype: float16\nmodel_init_kwargs:\n  device_map: auto\n")
    config, _ = make_parser().parse_args_and_config(["--config", str(yaml)])
    assert config.model_load_kwargs == {"device_map": "auto", "dtype": "float16"}


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("model_dtype", "bf16", "auto, bfloat16, float16, float32, or null"),
    ("attn_implementation", "flash", "eager, sdpa, flash_attention_2"),
    ("model_init_kwargs", "{not json", "a mapping"),
    ("model_init_kwargs", "[1, 2]", "a mapping"),
    ("model_init_kwargs", {"torch_dtype": "float16"}, "other than ['torch_dtype'] (set them with model_dtype"),
])
def test_invalid_load_options_are_refused_in_one_line(name: str, value: Any, allowed: str) -> None:
    with pytest.raises(InvalidOptionError, match=rf"^--{name}: got .*; allowed: .*") as refused:
        DigiQPipelineConfig(**{name: value})
    assert allowed in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_changed_load_option_recomputes_every_stage(name: str) -> None:
    """The first stage's fingerprint covers them, and every later stage carries it (``upstream``)."""
    assert name in STAGE_FIELDS["base_actor"]
    assert (stage_fingerprint(DigiQPipelineConfig(), "base_actor")
            != stage_fingerprint(DigiQPipelineConfig(**{name: OPTIONS[name]}), "base_actor"))


def test_unset_load_options_keep_the_fingerprints_of_earlier_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Null is how every model was loaded before these options existed: outputs made then stay current."""
    config = DigiQPipelineConfig()
    now = stage_fingerprint(config, "base_actor")
    earlier = tuple(name for name in STAGE_FIELDS["base_actor"] if name not in OPTIONS)
    monkeypatch.setitem(STAGE_FIELDS, "base_actor", earlier)
    assert stage_fingerprint(config, "base_actor") == now


# ---------------------------------------------------------------- report_to in behavior cloning
class _Stop(Exception):
    """Raised by the stand-in trainer once it has its arguments."""


def test_behavior_clone_reports_where_it_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    import digiq_trl.trainers.behavior_cloning as bc

    seen = []

    def trainer(args: Any, **kwargs: Any) -> None:
        seen.append(args.report_to)
        raise _Stop

    monkeypatch.setattr(bc, "SFTTrainer", trainer)
    rows = Dataset.from_dict({"prompt": [[]], "completion": [[]]})
    for report_to, expected in ((None, []), ("none", []), (["tensorboard"], ["tensorboard"])):
        with pytest.raises(_Stop):
            bc.behavior_clone(None, None, rows, "unused", report_to=report_to)
        assert seen.pop() == expected


def test_the_pipeline_clones_the_base_actor_with_its_report_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import digiq_trl.trainers.behavior_cloning as bc

    seen = {}
    monkeypatch.setattr(bc, "behavior_clone", lambda *args, **kwargs: seen.update(kwargs))
    pipe = DigiQPipeline(DigiQPipelineConfig(output_dir=str(tmp_path / "run"), base_actor=None, bc_steps=1,
                                             report_to=["tensorboard"]))

    class Processor:
        def save_pretrained(self, folder: Any) -> None:
            pass

    monkeypatch.setattr(pipe, "_untrained_actor", lambda: (None, Processor(), None))
    monkeypatch.setattr(pipe, "_demonstrations", lambda: [])
    pipe._behavior_clone()
    assert seen["report_to"] == ["tensorboard"]


# ---------------------------------------------------------------- model cards
def _critic_trainer(tmp_path: Path, backbone: str | None, data: Dataset) -> Any:
    from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
    from digiq_trl.trainers.critic_config import DigiQCriticConfig
    from digiq_trl.trainers.critic_trainer import DigiQCriticTrainer

    critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=3, v_input_dim=2, hidden_size=4, backbone_model_id=backbone))
    args = DigiQCriticConfig(output_dir=str(tmp_path / "critic"), max_steps=1, report_to=[], use_cpu=True,
                             save_strategy="no")
    return DigiQCriticTrainer(critic, args, train_dataset=data)


def _transitions(rows: int = 4) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [{"q_features": rng.random(3).tolist(), "v_features": rng.random(2).tolist(),
             "next_v_features": rng.random(2).tolist(), "reward": 0.0, "done": False, "mc_return": 0.0,
             "trajectory_reward": 0.0} for _ in range(rows)]


def _metadata(card: Path) -> str:
    return card.read_text().split("\n---\n", 1)[0]


@pytest.mark.parametrize(("backbone", "base_model"), [
    ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct"),
    ("my-user/digiq-general-representation", "my-user/digiq-general-representation"),
    ("../representation", None), ("/somewhere/representation", None), (ACTOR, None), (None, None),
])
def test_the_critic_card_names_its_feature_backbone_as_base_model(tmp_path, backbone, base_model) -> None:
    trainer = _critic_trainer(tmp_path, backbone, Dataset.from_list(_transitions()))
    trainer.create_model_card()
    metadata = _metadata(tmp_path / "critic" / "README.md")
    assert (f"base_model: {base_model}" in metadata) if base_model else ("base_model" not in metadata)


def test_a_push_without_dataset_name_names_no_made_up_dataset(tmp_path: Path) -> None:
    """Converted data (``Dataset.from_generator``) carries the builder's name, ``generator``: no Hub
    dataset. ``push_to_hub()`` calls ``create_model_card`` without a dataset name."""
    rows = _transitions()
    converted = Dataset.from_generator(lambda: iter(rows))
    assert converted.info.dataset_name == "generator"
    trainer = _critic_trainer(tmp_path, None, converted)
    trainer.create_model_card(model_name="critic")
    metadata = _metadata(tmp_path / "critic" / "README.md")
    assert "datasets" not in metadata and "generator" not in metadata and "None" not in metadata
    trainer.create_model_card(model_name="critic", dataset_name="my-user/aitw-general")
    assert "datasets:\n- my-user/aitw-general" in _metadata(tmp_path / "critic" / "README.md")


def test_a_run_pushes_its_cards_with_the_dataset_hub_id_when_it_has_one(tmp_path: Path) -> None:
    local = tmp_path / "data"
    Dataset.from_dict({"a": [1]}).save_to_disk(str(local))
    for dataset, expected in (("my-user/aitw-general", "my-user/aitw-general"), (str(local), None), (None, None)):
        assert RunArtifacts(DigiQPipelineConfig(output_dir=str(tmp_path / "run"), dataset=dataset)).dataset_hub_id == expected
