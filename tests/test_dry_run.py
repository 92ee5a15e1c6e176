"""A GPU user's first run: configs that fit, a dry run that sizes every stage, pushes checked before any work."""

from pathlib import Path

import pytest
import yaml
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from digiq_trl import pipeline_checks
from digiq_trl.commands.train import main
from digiq_trl.dry_run import image_tokens, model_shape, training_gib
from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig
from digiq_trl.pipeline_checks import InvalidOptionError


REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "examples" / "configs"
REAL = ["aitw_general_qwen2_5_vl", "aitw_webshop_qwen2_5_vl", "aitw_general_qwen2_5_vl_7b"]


@pytest.fixture(scope="module")
def aitw_sized(tmp_path_factory) -> str:
    """Two transitions with 1080x2400 screenshots, as AitW's."""
    path = tmp_path_factory.mktemp("aitw") / "data"
    screen = PILImage.new("RGB", (1080, 2400), "white")
    rows = {"episode_id": ["a", "a"], "step_id": [0, 1], "goal": ["g", "g"], "history": ["", ""],
            "image": [screen, screen], "action": ["PRESS_HOME", "STATUS_TASK_COMPLETE"], "reward": [0.0, 1.0],
            "done": [False, True], "trajectory_reward": [1.0, 1.0]}
    features = Features({name: Image() if name == "image" else Value("string") for name in rows})
    features.update({"step_id": Value("int64"), "reward": Value("float32"), "done": Value("bool"),
                     "trajectory_reward": Value("float32")})
    Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    return str(path)


def test_image_tokens_and_training_memory_match_the_hand_computed_table() -> None:
    """docs/real-data-gpu.md: 3,354 image tokens per 1080x2400 screenshot at the processors' default,
    1,272 at max_pixels 1,003,520; the 3B actor at batch 8 with checkpointing and answer-only logits
    peaks at about 16 GiB (3,354 image tokens) and 12 GiB (1,272)."""
    assert image_tokens(2400, 1080, None, None) == 3354
    assert image_tokens(2400, 1080, 1_003_520, None) == 1272
    shape = model_shape("Qwen/Qwen2.5-VL-3B-Instruct")
    assert shape.parameters == pytest.approx(3.76e9, rel=0.01) and shape.lora_parameters == pytest.approx(29.9e6, rel=0.01)
    assert training_gib(shape, 8, 3354 + 160, True, 2) == pytest.approx(16, rel=0.15)
    assert training_gib(shape, 8, 1272 + 160, True, 2) == pytest.approx(12, rel=0.15)
    assert training_gib(shape, 8, 3354 + 160, False, 2) == pytest.approx(145, rel=0.15)


@pytest.mark.parametrize("name", REAL)
def test_the_real_data_configs_fit_an_80_gb_gpu_by_the_dry_run(name, aitw_sized, capsys, monkeypatch) -> None:
    monkeypatch.setattr(pipeline_checks, "_hub_repo_missing", lambda repo, kind: "")  # as if the model were cached
    result = main(["--config", str(CONFIGS / f"{name}.yaml"), "--dataset", aitw_sized, "--dry_run"])
    printed = capsys.readouterr().out
    assert result["problems"] == [] and "checks passed" in printed
    for stage in ("base_actor", "representation", "features", "critic", "actor sampling", "actor training", "evaluate"):
        assert stage in printed
    assert 10 < result["peak_gib"] < 80, result["stages"]
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert config["activation_checkpointing"] and config["max_pixels"] and not config["push_to_hub"]


def test_a_dry_run_reports_what_a_run_would_find_late(aitw_sized, capsys) -> None:
    """Offline, a base actor that is not cached is a failed check (exit 2), and the estimates still print."""
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(CONFIGS / "aitw_general_qwen2_5_vl.yaml"), "--dataset", aitw_sized, "--dry_run"])
    printed = capsys.readouterr().out
    assert exited.value.code == 2 and "actor training" in printed
    assert "check failed: --base_actor: got 'Qwen/Qwen2.5-VL-3B-Instruct'" in printed and "offline" in printed


@pytest.mark.parametrize(("prefix", "message"), [("your-user/digiq-aitw", "--hub_model_prefix: got 'your-user/digiq-aitw'"),
                                                 ("me/digiq", "--push_to_hub: got True; allowed: false while the Hub is offline")])
def test_a_push_that_cannot_happen_is_refused_before_any_stage(tmp_path, prefix, message) -> None:
    """The shipped configs once pushed to a placeholder namespace: the representation trainer then failed
    on creating the repository after behavior cloning and data collection had run."""
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), push_to_hub=True, hub_model_prefix=prefix)
    with pytest.raises(InvalidOptionError, match=message):
        DigiQPipeline(config).run()
    assert not (tmp_path / "run").exists()


def test_a_given_dataset_is_loaded_and_its_screenshots_decoded_once_per_run(tmp_path, noisy_expert_data,
                                                                             monkeypatch) -> None:
    """Behavior cloning on the data and the data stage both read it: one load (one validation)."""
    from digiq_trl.data import hub

    loads = []
    load = hub.load_transitions
    monkeypatch.setattr(hub, "load_transitions", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), dataset=noisy_expert_data, base_actor=None,
                                 bc_steps=1, bc_batch_size=2, phone="source", test_size=0.4, ranking_alternatives=1,
                                 skip_stages=["representation", "features", "critic", "actor", "evaluate"])
    DigiQPipeline(config).run()
    assert len(loads) == 1 and (tmp_path / "run" / "data" / "dataset_dict.json").exists()
