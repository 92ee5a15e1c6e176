"""Every stage puts the models it loads on the process's accelerator (issue 22, item 1).

On a CPU machine placing a model is a no-op, so these tests stand a fake accelerator in for what
accelerate says the process's device is (``PartialState().device``) and record which models are
moved there. The recorded moves do nothing, so everything still runs on the CPU: a loader that never
places its model leaves it out of the record, and the test fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from datasets import Dataset, DatasetDict

from digiq_trl.artifacts import RunArtifacts
from digiq_trl.models.pretrained import resolve_pretrained
from digiq_trl.pipeline import DigiQPipeline
from digiq_trl.pipeline_config import DigiQPipelineConfig


ACTOR = "digiq-trl/phone-actor-tiny"
STAND_IN = torch.device("cuda", 7)
"""The accelerator this process is told it has (no test machine has a GPU 7)."""
PACKAGE = Path(__file__).resolve().parents[1] / "digiq_trl"


class Moves(list):
    """The modules moved to :data:`STAND_IN` (by identity)."""

    def placed(self, module: torch.nn.Module) -> bool:
        return any(moved is module for moved in self)


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> Moves:
    """Make :data:`STAND_IN` the process's device and record (without moving) every module sent there."""
    PartialState()  # the process's state, shared by every PartialState
    monkeypatch.setitem(PartialState._shared_state, "device", STAND_IN)
    record, move = Moves(), torch.nn.Module.to

    def to(self: torch.nn.Module, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if str(target) == str(STAND_IN):
            record.append(self)
            return self
        return move(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    return record


def _adapter(folder: Path) -> Path:
    """A LoRA adapter of the tiny actor saved in ``folder``."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from digiq_trl.trainers.lora import default_lora_config

    get_peft_model(AutoModelForImageTextToText.from_pretrained(resolve_pretrained(ACTOR)),
                   default_lora_config()).save_pretrained(folder)
    return folder


def _critic(folder: Path, width: int) -> None:
    """An untrained critic over features of ``width``, saved where a run keeps its critic."""
    from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig

    config = DigiQCriticModelConfig(q_input_dim=width, v_input_dim=width, hidden_size=8,
                                    backbone_model_id=resolve_pretrained(ACTOR))
    DigiQCritic(config).save_pretrained(folder)


def test_the_run_loaders_put_every_model_on_the_process_device(tmp_path: Path, moves: Moves) -> None:
    """Base actor (data, actor stages), actors to evaluate (adapter merged), feature extractor
    (features, critic, actor, evaluation, viewer) and critic (scoring)."""
    artifacts = RunArtifacts(DigiQPipelineConfig(output_dir=str(tmp_path / "run")))
    base, _ = artifacts.load_base_actor()
    assert moves.placed(base)
    actor, _ = artifacts.load_actor(_adapter(tmp_path / "adapter"))
    assert moves.placed(actor) and actor is not base
    extractor = artifacts.extractor()
    assert moves.placed(extractor.model)
    _critic(artifacts.path("critic"), extractor.hidden_size)
    assert moves.placed(artifacts.load_critic())


def test_behavior_cloning_and_representation_start_from_placed_models(tmp_path: Path, moves: Moves,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cloning = DigiQPipeline(DigiQPipelineConfig(output_dir=str(tmp_path / "run"), base_actor=ACTOR, bc_steps=1))
    assert moves.placed(cloning._untrained_actor()[0])
    pipe = DigiQPipeline(DigiQPipelineConfig(output_dir=str(tmp_path / "run"), base_actor=ACTOR))

    import digiq_trl.trainers.representation_trainer as representation

    given = []
    monkeypatch.setattr(representation, "train_representation", lambda model, *args, **kwargs: given.append(model) or {})
    DatasetDict(train=Dataset.from_dict({"step_id": [0]})).save_to_disk(str(pipe.artifacts.path("data")))
    pipe._fine_tune_representation()
    assert len(given) == 1 and moves.placed(given[0])


def test_the_viewer_loads_the_critic_and_its_backbone_on_the_process_device(tmp_path: Path, moves: Moves) -> None:
    from digiq_trl.models.critic import DigiQCritic
    from digiq_trl.viewer.writer import critic_feature_extractor

    _critic(tmp_path / "critic", 64)
    extractor = critic_feature_extractor(DigiQCritic.from_pretrained(str(tmp_path / "critic")))
    assert moves.placed(extractor.model)


def test_digiq_trl_evaluate_plays_with_the_actor_on_the_process_device(tmp_path: Path, moves: Moves) -> None:
    from digiq_trl.cli import main

    assert main(["evaluate", "--env", "sim", "--protocol", "ours", "--episodes", "1", "--horizon", "1",
                 "--batch-size", "1", "--output", str(tmp_path / "eval")]) == 0
    assert any(type(module).__name__.endswith("ForConditionalGeneration") for module in moves)


@pytest.mark.parametrize("module", ["pipeline.py", "run_scoring.py", "commands/diagnose.py", "evaluate_cli.py",
                                    "viewer/writer.py", "viewer/view_cli.py", "viewer/episodes.py",
                                    "envs/device_cli.py", "judges.py"])
def test_stages_and_tools_load_vlms_through_the_one_helper(module: str) -> None:
    """A VLM loaded by ``from_pretrained`` elsewhere would skip the placement and the run's model
    options (:meth:`RunArtifacts.load_model`)."""
    assert "AutoModelForImageTextToText.from_pretrained" not in (PACKAGE / module).read_text()
