"""Every YAML config parses into the pipeline config; the real-VLM ones match their model's config."""

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText
from trl import TrlParser

from digiq_trl.models.published import PUBLISHED_ARCHITECTURES
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
    if config.base_actor in MODEL_CONFIGS:
        snapshot = tmp_path / "model"
        snapshot.mkdir()
        shutil.copy(MODEL_CONFIGS[config.base_actor], snapshot / "config.json")
        model_config = AutoConfig.from_pretrained(snapshot)
    else:  # its published architecture (digiq_trl.models.published)
        model_config = PUBLISHED_ARCHITECTURES[config.base_actor].config()
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


REFERENCE = {  # the reference implementation's choices (docs/reference-parity.md), as pipeline fields
    "feature_input": "actionability", "feature_layer": -1, "feature_pooling": "mean",
    "critic_text_encoder": "roberta-base", "critic_text_layout": "separate", "critic_text_match": False,
    "critic_text_pooling": "pooler",
    "critic_v_target_combine": "independent", "critic_conservative_weight": 0.0, "critic_steps": 800,
    "critic_learning_rate": 1e-5, "critic_max_grad_norm": 0.01, "num_candidates": 16, "candidate_temperature": 1.2,
    "min_candidate_count": 1, "candidate_resamples": 3, "anchor_weight": 0.0, "actor_steps": 900, "actor_learning_rate": 1e-4,
    "actor_max_grad_norm": 0.01, "actor_token_probability_clamp": [0.001, 0.99], "eval_goals": "first", "eval_episodes": 96, "eval_temperature": 0.8,
}


@pytest.mark.parametrize(("suite", "threshold"), [("general", 0.10), ("webshop", 0.05)])
def test_paper_preset_sets_the_reference_choices(suite: str, threshold: float) -> None:
    config = parse(REPO / "examples" / "configs" / f"aitw_{suite}_paper.yaml")
    assert {name: getattr(config, name) for name in REFERENCE} == REFERENCE
    assert config.suite == suite and config.advantage_threshold == threshold
    assert config.critic_batch_size * config.critic_gradient_accumulation_steps == 128  # 32 x 4
    assert config.actor_batch_size * config.actor_gradient_accumulation_steps == 128
    defaults = DigiQPipelineConfig()
    assert config.critic_v_target_combine != defaults.critic_v_target_combine, "the preset differs from our default"
