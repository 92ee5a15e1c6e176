"""Ordinary faults (a kill, a full disk, damaged or replaced files, a second run on the same folder)
never leave an output folder that a rerun cannot finish, and every reused file is verified."""

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk
from toy_run import TOY, save_noisy_expert_data

from digiq_trl.artifacts import DamagedArtifactError, content_digest
from digiq_trl.commands.train import main
from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig
from digiq_trl.run_lock import RunInProgressError, RunLock
from digiq_trl.staging import _host
from digiq_trl.trainers.checkpoints import last_complete_checkpoint


REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "critic/model.safetensors"


def _manifests(out: Path) -> dict[str, dict[str, str]]:
    """Every stage manifest's recorded file digests, by manifest folder."""
    return {str(m.parent.relative_to(out)): json.loads(m.read_text())["files"] for m in sorted(out.rglob("manifest.json"))}


def _contents(out: Path) -> list[str]:
    """What a run's manifests list, by content only, so that a copied run compares equal: the files'
    digests, but feature caches by their tables (their Arrow metadata holds a fingerprint of the
    model's path) and without the adapters' ``adapter_config.json`` (it records the base actor's path)."""
    digests = []
    for files in _manifests(out).values():
        for name, digest in files.items():
            if re.fullmatch(r"data/\w+/cache-\w+\.arrow", name):
                table = Dataset.from_file(str(out / name)).data.table
                digest = hashlib.sha256(repr((table.column_names, table.to_pydict())).encode()).hexdigest()
            if not name.endswith("adapter_config.json"):
                digests.append(digest)
    return sorted(digests)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _copy(config: DigiQPipelineConfig, where: Path) -> DigiQPipelineConfig:
    shutil.copytree(config.output_dir, where)
    return DigiQPipelineConfig(**{**config.__dict__, "output_dir": str(where)})


def _advice(error: pytest.ExceptionInfo) -> str:
    """The command a damaged-output message tells the user to run."""
    return re.search(r"Remove it with `([^`]+)`", str(error.value)).group(1)


# ---------------------------------------------------------------------------------------- checkpoints
def test_the_last_complete_checkpoint_is_taken_and_incomplete_ones_removed(tmp_path, caplog) -> None:
    for step, state in ((4, "{}"), (8, None), (12, "{trunc")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "config.json").write_text("{}")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-12" in caplog.text and "checkpoint-8" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert last_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.slow
def test_a_killed_or_disk_full_critic_resumes_to_the_uninterrupted_weights(tmp_path, noisy_expert_data,
                                                                           monkeypatch, caplog) -> None:
    """A kill at step 7 and a full disk in the middle of the step-8 checkpoint (after its weights, before
    its trainer state): each rerun resumes from the last complete checkpoint to the same critic bytes."""
    from digiq_trl.trainers.critic_trainer import DigiQCriticTrainer

    toy = {**TOY, "critic_steps": 10, "critic_save_steps": 4, "actor_seeds": [0]}
    skip = ["actor", "evaluate"]
    fresh = DigiQPipelineConfig(output_dir=str(tmp_path / "fresh"), dataset=noisy_expert_data, skip_stages=skip, **toy)
    DigiQPipeline(fresh).run()
    expected = _manifests(Path(fresh.output_dir))["critic"][WEIGHTS]

    killed = DigiQPipelineConfig(**{**fresh.__dict__, "output_dir": str(tmp_path / "killed")})
    step = DigiQCriticTrainer.training_step
    calls = []

    def crash_at_step_seven(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DigiQCriticTrainer, "training_step", crash_at_step_seven)
    with pytest.raises(KeyboardInterrupt):
        DigiQPipeline(killed).run()
    out = Path(killed.output_dir)
    assert not (out / "critic").exists()  # nothing half-written where the critic goes
    assert (out / "critic.partial" / "checkpoint-4").is_dir()
    monkeypatch.setattr(DigiQCriticTrainer, "training_step", step)
    caplog.set_level("INFO")
    DigiQPipeline(killed).run()
    assert "stage critic: resuming from" in caplog.text and "checkpoint-4" in caplog.text
    assert _manifests(out)["critic"][WEIGHTS] == expected
    assert not (out / "critic.partial").exists()

    full = DigiQPipelineConfig(**{**fresh.__dict__, "output_dir": str(tmp_path / "full")})
    save = DigiQCriticTrainer._save_optimizer_and_scheduler
    saves = []

    def disk_full_at_the_second_checkpoint(self, output_dir):
        saves.append(output_dir)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.pt"))
        return save(self, output_dir)

    monkeypatch.setattr(DigiQCriticTrainer, "_save_optimizer_and_scheduler", disk_full_at_the_second_checkpoint)
    with pytest.raises(OSError, match="No space left"):
        DigiQPipeline(full).run()
    partial = Path(full.output_dir) / "critic.partial"
    assert (partial / "checkpoint-8" / "model.safetensors").exists()
    assert not (partial / "checkpoint-8" / "trainer_state.json").exists()  # the poisoned checkpoint
    monkeypatch.setattr(DigiQCriticTrainer, "_save_optimizer_and_scheduler", save)
    caplog.clear()
    DigiQPipeline(full).run()
    assert "skipping the incomplete checkpoint" in caplog.text and "checkpoint-8" in caplog.text
    assert re.search(r"resuming from \S*checkpoint-4", caplog.text)
    assert _manifests(Path(full.output_dir))["critic"][WEIGHTS] == expected


@pytest.mark.slow
def test_killed_representation_and_actor_stages_resume_to_the_uninterrupted_outputs(tmp_path, finished_run,
                                                                                    monkeypatch, caplog) -> None:
    """Checkpoints every step or two; a kill in the representation stage, then one in the actor stage:
    each rerun resumes from the last checkpoint and the finished run equals one never interrupted."""
    from digiq_trl.trainers.actor_trainer import BestOfNActorTrainer
    from digiq_trl.trainers.representation_trainer import RepresentationTrainer

    config = DigiQPipelineConfig(**{**finished_run.__dict__, "output_dir": str(tmp_path / "run"),
                                    "representation_save_steps": 2, "actor_save_steps": 1})
    out = Path(config.output_dir)
    caplog.set_level("INFO", logger="digiq_trl.pipeline")
    for trainer, done_steps, manifest in ((RepresentationTrainer, 2, "representation"),
                                          (BestOfNActorTrainer, 1, "actor/filtered_bc/seed0")):
        step = trainer.training_step

        def killed(self, *args, _step=step, _done=done_steps, **kwargs):
            if self.state.global_step == _done:  # after the checkpoint of step `_done`
                raise KeyboardInterrupt("killed")
            return _step(self, *args, **kwargs)

        monkeypatch.setattr(trainer, "training_step", killed)
        with pytest.raises(KeyboardInterrupt):
            DigiQPipeline(config).run()
        monkeypatch.setattr(trainer, "training_step", step)
        assert not (out / manifest / "manifest.json").exists()
    DigiQPipeline(config).run()
    assert re.search(r"stage representation: resuming from \S*checkpoint-2", caplog.text)
    assert re.search(r"stage actor: resuming \S* from \S*checkpoint-1", caplog.text)
    assert _contents(out) == _contents(Path(finished_run.output_dir))


def test_a_full_disk_ends_the_command_in_one_line_with_what_to_do(tmp_path, capsys, monkeypatch) -> None:
    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", "run/critic.partial/checkpoint-8/optimizer.pt")

    monkeypatch.setattr(DigiQPipeline, "run", full)
    with pytest.raises(SystemExit) as exited:
        main(["--output_dir", str(tmp_path / "run")], prog="digiq-trl train")
    assert str(exited.value.code).splitlines() == [
        "digiq-trl train: error: no space left on device while writing run/critic.partial/checkpoint-8/optimizer.pt; "
        "free space and rerun the same command: finished stages are reused and the critic resumes from its last "
        "complete checkpoint"]


def test_an_unwritable_output_folder_ends_the_command_in_one_line(tmp_path, monkeypatch) -> None:
    def read_only(self):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/run/.lock")

    monkeypatch.setattr(DigiQPipeline, "run", read_only)
    with pytest.raises(SystemExit) as exited:
        main(["--output_dir", str(tmp_path / "run")], prog="digiq-trl train")
    assert str(exited.value.code) == ("digiq-trl train: error: /data/run/.lock: not writable (Permission denied); "
                                      "choose another --output_dir or make it writable")


# ---------------------------------------------------------------------------------------- reused files
@pytest.mark.slow
def test_damaged_best_of_n_caches_are_recomputed_and_killed_scratch_swept(tmp_path, finished_run, caplog) -> None:
    config = _copy(finished_run, tmp_path / "run")
    out = Path(config.output_dir)
    before = _contents(out)
    cache = out / "actor" / "_best_of_n_cache"
    best, greedy = (next(cache.glob(f"{step}-*")) for step in ("best-of-n", "greedy"))
    blob = bytearray((best / "data.arrow").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (best / "data.arrow").write_bytes(bytes(blob))  # a flipped byte
    with (greedy / "data.arrow").open("r+b") as handle:
        handle.truncate(100)  # a truncated file
    scratch = cache / f".best-of-n-x.staging-{_host()}-{_dead_pid()}-killed00"  # a killed process's leftovers
    (scratch / "best-of-n-x").mkdir(parents=True)
    (scratch / "best-of-n-x" / "tmp1234").write_bytes(b"partial")
    shutil.rmtree(out / "actor" / "digiq")
    shutil.rmtree(out / "actor" / "filtered_bc")
    caplog.set_level("INFO")
    DigiQPipeline(config).run()
    assert f"the cached best-of-2 candidates in {best} is damaged" in caplog.text
    assert f"greedy actions of the starting policy in {greedy} is damaged" in caplog.text
    assert not scratch.exists()
    assert _contents(out) == before  # recomputed to the same bytes


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated feature cache", "deleted eval_metrics.json", "flipped critic byte"])
def test_a_damaged_stage_output_names_the_file_and_its_advice_fixes_it(tmp_path, finished_run, damage) -> None:
    config = _copy(finished_run, tmp_path / "run")
    out = Path(config.output_dir)
    before = _contents(out)
    if damage == "truncated feature cache":
        damaged = out / sorted(_manifests(out)["features"])[-1]  # a feature column cache under data/train
        with damaged.open("r+b") as handle:
            handle.truncate(64)
    elif damage == "deleted eval_metrics.json":
        damaged = out / "critic" / "eval_metrics.json"
        damaged.unlink()
    else:
        damaged = out / WEIGHTS
        blob = bytearray(damaged.read_bytes())
        blob[-10] ^= 0xFF
        damaged.write_bytes(bytes(blob))
    with pytest.raises(DamagedArtifactError, match=re.escape(str(damaged))) as error:
        DigiQPipeline(config).run()
    assert len(str(error.value).splitlines()) == 1
    subprocess.run(_advice(error), shell=True, check=True)
    DigiQPipeline(config).run()
    assert _contents(out) == before


def test_an_unreadable_manifest_is_a_damaged_output_with_its_fix(tmp_path) -> None:
    from digiq_trl.artifacts import RunArtifacts

    artifacts = RunArtifacts(DigiQPipelineConfig(output_dir=str(tmp_path)))
    (tmp_path / "critic").mkdir()
    (tmp_path / "critic" / "manifest.json").write_text('{"fingerprint": "ab", "fil')
    with pytest.raises(DamagedArtifactError, match=r"critic/manifest.json is unreadable .* `rm -rf .*critic`"):
        artifacts.is_current("critic", tmp_path / "critic", "ab")


# ---------------------------------------------------------------------------------------- replaced inputs
def test_inputs_are_digested_by_content_and_hub_ids_by_revision(tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    first = content_digest(str(model))
    (model / "cache-1234.arrow").write_bytes(b"a datasets cache beside it")
    assert content_digest(str(model)) == first
    (model / "model.safetensors").write_bytes(b"other weights")  # new content, same path and size
    assert content_digest(str(model)) != first
    assert content_digest("someone/not-cached") == "someone/not-cached"  # offline and not cached: the id


@pytest.mark.slow
def test_a_dataset_replaced_at_the_same_path_is_trained_on_with_one_line_saying_so(tmp_path, caplog) -> None:
    dataset = tmp_path / "transitions"
    save_noisy_expert_data(dataset, episodes=12, seed=0)
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), dataset=str(dataset),
                                 skip_stages=["features", "critic", "actor", "evaluate"], **TOY)
    DigiQPipeline(config).run()
    first = load_from_disk(str(tmp_path / "run" / "data"))
    shutil.rmtree(dataset)
    save_noisy_expert_data(dataset, episodes=12, seed=1)  # other episodes, same path
    new = load_from_disk(str(dataset))
    caplog.set_level("INFO", logger="digiq_trl.pipeline")
    DigiQPipeline(config).run()
    lines = [line for line in caplog.text.splitlines() if "changed" in line]
    assert any(f"stage data: the content of --dataset {dataset} changed" in line for line in lines), lines
    assert any("stage representation: an earlier stage changed" in line for line in lines), lines
    trained = load_from_disk(str(tmp_path / "run" / "data"))
    goals = set(trained["train"]["goal"]) | set(trained["test"]["goal"])
    assert goals == set(new["goal"]) != set(first["train"]["goal"]) | set(first["test"]["goal"])
    caplog.clear()
    DigiQPipeline(config).run()  # unchanged since: everything reused
    assert "recomputing" not in caplog.text


# ---------------------------------------------------------------------------------------- one run per folder
def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(tmp_path, caplog) -> None:
    (tmp_path / ".lock").write_text(json.dumps({"host": "h", "pid": _dead_pid(), "started": "earlier"}))
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text
    assert (tmp_path / ".lock").read_text() == ""  # released
    caplog.clear()
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        pass
    assert "taking over" not in caplog.text


FIRST_RUN = """
import sys, time
from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig
make = DigiQPipeline._make_data
def slow(self):
    print("started", flush=True)
    time.sleep(12)
    return make(self)
DigiQPipeline._make_data = slow
DigiQPipeline(DigiQPipelineConfig(output_dir=sys.argv[1], dataset=sys.argv[2], phone="source", test_size=0.4,
                                  ranking_alternatives=2, skip_stages=sys.argv[3:])).run()
"""


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_ends_at_once_naming_the_first(tmp_path, noisy_expert_data) -> None:
    from digiq_trl.pipeline_config import STAGES

    skip = [s for s in STAGES if s != "data"]
    reference = DigiQPipelineConfig(output_dir=str(tmp_path / "alone"), dataset=noisy_expert_data, phone="source",
                                    test_size=0.4, ranking_alternatives=2, skip_stages=skip)
    DigiQPipeline(reference).run()
    out = tmp_path / "shared"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([sys.executable, "-c", FIRST_RUN, str(out), noisy_expert_data, *skip], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert first.stdout.readline().strip() == "started"  # the first holds the lock, in its data stage
        start = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "digiq_trl.cli", "train", "--output_dir", str(out),
                                 "--dataset", noisy_expert_data, "--skip_stages", *skip], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert time.perf_counter() - start < 10
        assert second.returncode != 0 and f"PID {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
        log.close()
    assert _manifests(out) == _manifests(tmp_path / "alone")
    with pytest.raises(RunInProgressError, match="in use by another run"), RunLock(out), RunLock(out):
        pass
