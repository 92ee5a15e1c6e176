"""The ``digiq-trl`` subcommands: dispatch, the train summary, and the example configs they name."""

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from digiq_trl.cli import SUBCOMMANDS, add_tool_parser, main
from digiq_trl.commands import train
from digiq_trl.commands.train_base_actor import BaseActorArguments
from digiq_trl.commands.train_base_actor import make_parser as base_actor_parser
from digiq_trl.pipeline_config import DigiQPipelineConfig


REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "examples" / "configs"

OFFLINE_RESULTS = {
    "metric": "action_matching_accuracy",
    "methods": {"base": {"action_matching_accuracy": 0.41234, "stderr": 0.01},
                "digiq": {"action_matching_accuracy": 0.45678, "stderr": 0.01}},
}


class FakePipeline:
    """Stands in for DigiQPipeline: records its config and returns canned results."""

    configs: list[DigiQPipelineConfig] = []

    def __init__(self, config: DigiQPipelineConfig) -> None:
        self.configs.append(config)

    def run(self) -> dict[str, Any]:
        return OFFLINE_RESULTS


def test_summary_uses_the_runs_metric() -> None:
    assert train.summary(OFFLINE_RESULTS, "out") == {
        "output_dir": "out", "action_matching_accuracy": {"base": 0.412, "digiq": 0.457}}
    simulator = {"metric": "success_rate", "methods": {"base": {"success_rate": 0.06}}}
    assert train.summary(simulator, "out") == {"output_dir": "out", "success_rate": {"base": 0.06}}


def test_train_command_parses_flags_and_prints_the_offline_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("digiq_trl.pipeline.DigiQPipeline", FakePipeline)
    monkeypatch.setattr(FakePipeline, "configs", [])
    assert main(["train", "--output_dir", "outputs/x", "--evaluation", "offline", "--actor_seeds", "0", "1"]) == 0
    (config,) = FakePipeline.configs
    assert (config.output_dir, config.evaluation, config.actor_seeds) == ("outputs/x", "offline", [0, 1])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"output_dir": "outputs/x", "action_matching_accuracy": {"base": 0.412, "digiq": 0.457}}


def test_train_command_reads_a_yaml_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("digiq_trl.pipeline.DigiQPipeline", FakePipeline)
    monkeypatch.setattr(FakePipeline, "configs", [])
    main(["train", "--config", str(CONFIGS / "simulator_webshop.yaml"), "--seed", "7"])
    (config,) = FakePipeline.configs
    assert (config.suite, config.seed) == ("webshop", 7)


def test_tools_parse_under_their_listed_name_help_and_docstring() -> None:
    for sub in (s for s in SUBCOMMANDS if not s.script):
        module = importlib.import_module(sub.module)
        subparsers = argparse.ArgumentParser().add_subparsers()
        parser = add_tool_parser(subparsers, sub)
        (choice,) = subparsers._choices_actions
        assert (choice.dest, choice.help, parser.description) == (sub.name, sub.help, module.__doc__)
        assert parser.get_default("func") is module.run and parser.get_default("parser") is parser


def test_every_script_command_has_a_parser_and_main() -> None:
    for sub in (s for s in SUBCOMMANDS if s.script):
        module = importlib.import_module(sub.module)
        assert callable(module.main)
        assert module.make_parser(prog="x").format_help().startswith("usage: x")


def test_phone_actor_yaml_is_the_shipped_actors_recipe() -> None:
    from digiq_trl.commands.train_base_actor import recipe
    from digiq_trl.models.pretrained import resolve_pretrained

    (args,) = base_actor_parser().parse_args_and_config(["--config", str(CONFIGS / "phone_actor_tiny.yaml")])
    assert isinstance(args, BaseActorArguments)
    card = (Path(resolve_pretrained(DigiQPipelineConfig().base_actor)) / "README.md").read_text()
    shipped = yaml.safe_load(card.split("## Recipe", 1)[1].split("```yaml", 1)[1].split("```", 1)[0])
    assert recipe(args) == shipped


def test_representation_runs_the_tiny_yaml_with_no_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from digiq_trl.commands import train_representation as command

    seen: dict[str, Any] = {}
    monkeypatch.setattr(command, "load_data", lambda script_args, seed: seen.setdefault("script_args", script_args))
    monkeypatch.setattr(command, "load_model", lambda script_args: (None, None))
    monkeypatch.setattr("digiq_trl.trainers.representation_trainer.train_representation",
                        lambda model, processor, data, args: seen.setdefault("args", args) and {})
    command.main([])
    yaml_args = command.make_parser().parse_args_and_config(["--config", str(CONFIGS / "representation_tiny.yaml")])
    assert (seen["script_args"], seen["args"]) == yaml_args
    assert yaml.safe_load((CONFIGS / "representation_tiny.yaml").read_text()) == command.EMBEDDED_DEFAULT


def test_a_damaged_stage_output_is_one_line_and_a_nonzero_exit(tmp_path, monkeypatch) -> None:
    from digiq_trl import pipeline
    from digiq_trl.artifacts import DamagedArtifactError
    from digiq_trl.commands import train

    class Damaged:
        def __init__(self, config):
            pass

        def run(self):
            raise DamagedArtifactError("stage critic: run/critic/model.safetensors does not match its manifest")

    monkeypatch.setattr(pipeline, "DigiQPipeline", Damaged)
    with pytest.raises(SystemExit) as exit_:
        train.main([f"--output_dir={tmp_path}"], prog="digiq-trl train")
    assert str(exit_.value) == ("digiq-trl train: error: stage critic: run/critic/model.safetensors does not "
                                "match its manifest")


@pytest.mark.slow
def test_train_base_actor_briefly_saves_an_actor_that_loads_and_acts(tmp_path, capsys) -> None:
    """The shipped actor's command and YAML, shortened: the saved folder loads with from_pretrained
    and acts, and its card's recipe is the run's settings."""
    from transformers import AutoModelForImageTextToText

    from digiq_trl.commands.train_base_actor import main as train_base_actor
    from digiq_trl.commands.train_base_actor import recipe
    from digiq_trl.envs import PhoneEnv
    from digiq_trl.models.policy import VLMPolicy
    from digiq_trl.models.processing import load_processor

    out = tmp_path / "actor"
    flags = ["--config", str(CONFIGS / "phone_actor_tiny.yaml"), "--output_dir", str(out), "--demo_episodes", "6",
             "--max_steps", "3", "--batch_size", "4", "--eval_episodes", "2", "--eval_splits", "test",
             "--num_candidates", "2", "--candidate_episodes", "1", "--hidden_size", "64", "--num_hidden_layers", "1"]
    results = train_base_actor(flags)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["greedy"]["test"]["num_episodes"] == 2
    assert not (out / "training_args.bin").exists()
    model, processor = AutoModelForImageTextToText.from_pretrained(out), load_processor(str(out))
    observation, _ = PhoneEnv(split="test").reset(seed=0)
    assert len(VLMPolicy(model, processor, max_new_tokens=8).act([observation])) == 1
    (args,) = base_actor_parser().parse_args_and_config(flags)
    card = (out / "README.md").read_text()
    assert yaml.safe_load(card.split("```yaml", 1)[1].split("```", 1)[0]) == recipe(args) == {
        k: v for k, v in results["args"].items() if k not in ("output_dir", "num_threads")}
