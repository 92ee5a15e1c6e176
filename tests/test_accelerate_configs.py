"""The accelerate configs in ``examples/accelerate_configs`` are ones ``accelerate launch`` accepts.

Nothing is launched: each file is read the way ``accelerate launch --config_file`` reads it, its
nested DeepSpeed / FSDP settings are checked against the launcher's own flags, and the plugins are
built from them.
"""

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "accelerate_configs").glob("*.yaml"))
EXPECTED = {"single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"}


def test_every_setup_has_a_config() -> None:
    assert {path.stem for path in CONFIGS} == EXPECTED


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_accepted_by_accelerate(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys and distributed types
    assert config.mixed_precision == "bf16"
    assert not config.use_cpu
    if config.distributed_type == DistributedType.NO:
        assert config.num_processes == 1
    else:
        assert config.num_processes > 1
    flags = {action.dest for action in launch_command_parser()._actions}
    nested = {"deepspeed_config": "", "fsdp_config": "fsdp_"}
    for section, prefix in nested.items():
        for key in raw.get(section) or {}:
            assert (key if key.startswith(prefix) else prefix + key) in flags, f"{path.name}: {section}.{key}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_header_says_when_and_how_to_launch(path: Path) -> None:
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"accelerate launch --config_file examples/accelerate_configs/{path.name}" in header
    assert "examples/train.py --config examples/configs/" in header


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_settings_build_a_plugin(stage: int) -> None:
    settings = yaml.safe_load((CONFIGS[0].parent / f"deepspeed_zero{stage}.yaml").read_text())["deepspeed_config"]
    assert settings["zero_stage"] == stage
    assert "gradient_accumulation_steps" not in settings  # "auto": each trainer's own value
    # zero3_init_flag=True would register a global HfDeepSpeedConfig in this test process
    plugin = DeepSpeedPlugin(**{**settings, "zero3_init_flag": False})
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == stage
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"


def test_fsdp_settings_build_a_plugin(monkeypatch) -> None:
    """The launcher's own path: config file -> launch arguments -> environment -> plugin."""
    path = CONFIGS[0].parent / "fsdp.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)
    for name, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(name, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
