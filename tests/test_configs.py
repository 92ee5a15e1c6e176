"""Every YAML config parses into the pipeline config; the real-VLM ones match their model's config."""

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText
from trl import TrlParser

from digiq_trl.pipeline import DigiQPipelineConfig


REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "examples" / "configs").glob("*.yaml"))
PIPELINE_CONFIGS = [p for p in CONFIGS if not p.name.startswith(("representation", "phone_actor"))]
# config.json of the public Qwen/Qwen2.5-VL-3B-Instruct checkpoint, kept here for offline tests.
MODEL_CONFIGS = {"Qwen/Qwen2.5-VL-3B-Instruct": REPO / "tests" / "data" / "qwen2_5_vl_3b_instruct_config.json"}


def parse(path: Path) -> DigiQPipelineConfig:
    (config,) = TrlParser(DigiQPipelineConfig).parse_args_and_config(["--config", str(path)])
    return config


def test_there_are_simulator_and_real_configs() -> None:
    names = {p.name for p in PIPELINE_CONFIGS}
    assert {"default.yaml", "simulator_webshop.yaml", "aitw_general_qwen2_5_vl.yaml",
            "aitw_webshop_qwen2_5_vl.yaml"} <= names


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.stem)
def test_config_parses(path: Path) -> None:
    config = parse(path)
    assert config.suite in ("general", "webshop")
    assert config.output_dir.startswith("outputs/")


def test_default_yaml_is_the_no_argument_default() -> None:
    (no_args,) = TrlParser(DigiQPipelineConfig).parse_args_and_config([])
    assert parse(REPO / "examples" / "configs" / "default.yaml") == no_args


@pytest.mark.parametrize(
    "path", [p for p in PIPELINE_CONFIGS if "qwen" in p.name], ids=lambda p: p.stem
)
def test_real_vlm_configs_load_their_model_config(path: Path, tmp_path: Path) -> None:
    config = parse(path)
    snapshot = tmp_path / "model"
    snapshot.mkdir()
    shutil.copy(MODEL_CONFIGS[config.base_actor], snapshot / "config.json")
    model_config = AutoConfig.from_pretrained(snapshot)
    assert 1 <= config.feature_layer <= model_config.text_config.num_hidden_layers
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(model_config)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert config.bf16 and config.advantage_threshold in (0.05, 0.10)


@pytest.mark.parametrize(
    "config_class",
    [DigiQPipelineConfig, "DigiQCriticConfig", "BestOfNActorConfig", "RepresentationConfig"],
)
def test_help_renders_for_every_config(config_class) -> None:
    # argparse %-formats help strings: a bare "30 % of" broke `examples/train.py --help`
    import digiq_trl

    cls = getattr(digiq_trl, config_class) if isinstance(config_class, str) else config_class
    text = TrlParser((cls,)).format_help()
    assert "--output_dir" in text
