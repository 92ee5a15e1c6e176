"""The whole pipeline end to end at toy sizes: every stage runs, writes its outputs, and resumes."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_from_disk
from toy_run import TOY

from digiq_trl.data import take_episodes
from digiq_trl.pipeline import STAGES, DigiQPipeline, DigiQPipelineConfig
from digiq_trl.run_scoring import across_training_seeds


REPO = Path(__file__).resolve().parents[1]


def test_take_episodes_keeps_whole_episodes_within_the_budget() -> None:
    ds = Dataset.from_dict({"episode_id": ["a", "a", "b", "c", "c", "c", "d"], "step_id": [0, 1, 0, 0, 1, 2, 0]})
    for seed in range(5):
        taken = take_episodes(ds, 4, seed)
        ids = taken["episode_id"][:]
        assert len(ids) <= 4 and len(ids) >= 3
        assert all(ids.count(e) == ds["episode_id"][:].count(e) for e in set(ids))
        for episode in set(ids):
            steps = [s for e, s in zip(ids, taken["step_id"][:]) if e == episode]
            assert steps == list(range(len(steps)))
    assert {tuple(take_episodes(ds, 4, s)["episode_id"][:]) for s in range(5)} != {("a", "a", "b")}


def test_across_training_seeds_by_hand() -> None:
    single = {"success_rate": 0.3, "stderr": 0.01, "per_seed": [0.29, 0.31]}
    assert across_training_seeds([single], "success_rate") is single
    runs = [{"success_rate": r, "by_kind": {"search": {"successes": k, "episodes": 5}}}
            for r, k in ((0.2, 1), (0.4, 2), (0.6, 3))]
    result = across_training_seeds(runs, "success_rate")
    assert result["success_rate"] == pytest.approx(0.4)
    assert result["stderr"] == pytest.approx(0.2 / 3**0.5)
    assert result["per_seed"] == [0.2, 0.4, 0.6] and result["runs"] == runs
    assert result["by_kind"] == {"search": {"successes": 6, "episodes": 15, "success_rate": 0.4}}


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="--skip_stages: got"):
        DigiQPipelineConfig(skip_stages=["critics"])


@pytest.mark.slow
def test_all_stages_write_outputs_and_resume(tmp_path, noisy_expert_data, monkeypatch) -> None:
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), dataset=noisy_expert_data, **TOY)
    results = DigiQPipeline(config).run()
    out = Path(config.output_dir)
    assert set(results["methods"]) == {"base", "filtered_bc", "digiq"}
    assert len(results["methods"]["digiq"]["per_seed"]) == 2
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]
    for name in ("report.md", "success_rate.png", "critic_losses.png", "critic_values.png",
                 "critic/model.safetensors", "actor/digiq/seed0/adapter_config.json",
                 "actor/filtered_bc/seed0/adapter_config.json", "representation/config.json", "evaluation.html"):
        assert (out / name).exists(), name
    assert "| Digi-Q (Best-of-N) |" in (out / "report.md").read_text()
    assert 0.0 <= results["critic"]["eval_v0_auroc"] <= 1.0
    assert results["behavior_data"]["episodes"] == 40
    _card_code_runs_elsewhere(out, tmp_path / "elsewhere", monkeypatch)

    resumed = DigiQPipeline(config)
    again = resumed.run()
    assert again["methods"] == results["methods"]
    assert all(resumed.timings[stage] < 5 for stage in STAGES if stage not in ("features", "critic", "evaluate"))

    offline_config = DigiQPipelineConfig(
        output_dir=config.output_dir, dataset=noisy_expert_data, evaluation="offline",
        skip_stages=[s for s in STAGES if s != "evaluate"], **TOY,
    )
    offline = DigiQPipeline(offline_config).run()
    assert offline["metric"] == "successful_episode_action_match"
    assert all(0.0 <= row["successful_episode_action_match"] <= 1.0 for row in offline["methods"].values())
    used = offline["offline_evaluation"]
    assert 0 < used["episodes"] < used["of_episodes"] and used["steps"] < used["of_steps"]  # failures left out
    assert used["behavior_success_rate"] == pytest.approx(used["episodes"] / used["of_episodes"])
    assert (out / "successful_episode_action_match.png").exists()
    assert "successful test episodes" in (out / "report.md").read_text()

    _diagnose(config.output_dir, noisy_expert_data)


def _card_code_runs_elsewhere(run: Path, elsewhere: Path, monkeypatch) -> None:
    """The critic and representation folders, copied side by side somewhere else (standing in for
    the Hub on a fresh machine), load with nothing but their model cards' code, and give the run's
    own features."""
    from digiq_trl.models.features import VLMFeatureExtractor

    elsewhere.mkdir()
    for name in ("critic", "representation"):
        shutil.copytree(run / name, elsewhere / name)
    test = load_from_disk(str(run / "data"))["test"]
    rows = test.select([i for i, e in enumerate(test["episode_id"]) if e == test[0]["episode_id"]])  # one episode
    candidates = [[action, "PRESS_HOME"] for action in rows["action"]]
    namespace = {"dataset": rows, "images": rows["image"], "goals": rows["goal"], "histories": rows["history"],
                 "candidates": candidates}
    monkeypatch.chdir(elsewhere)
    for name in ("representation", "critic"):
        blocks = re.findall(r"```python\n(.*?)```", (elsewhere / name / "README.md").read_text(), re.S)
        assert blocks, name
        for block in blocks:
            exec(block, namespace)
    monkeypatch.undo()
    def features(**kwargs) -> torch.Tensor:
        extractor = VLMFeatureExtractor.from_pretrained(str(run / "representation"), **kwargs)
        return extractor.state_features(rows["image"], rows["goal"], rows["history"])

    assert torch.allclose(namespace["v"], features())
    layer = json.loads((run / "critic" / "config.json").read_text())["feature_layer"]
    cached = torch.tensor(namespace["dataset"]["v_features"])  # the critic card's code: its own layer
    assert torch.allclose(cached, features(layer=layer), atol=1e-3, rtol=1e-3)  # the cache stores float16
    assert len(namespace["scores"]) == len(rows) >= 1 and namespace["advantage"].shape == (2,)


def _diagnose(output_dir: str, dataset: str) -> None:
    """examples/diagnose_best_of_n.py on a finished toy run: headroom counts and the oracle actors."""
    flags = [f"--{k}={v}" for k, v in TOY.items() if not isinstance(v, list)]
    flags += ["--eval_seeds", "0", "--actor_seeds", "0"]
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "diagnose_best_of_n.py"), f"--output_dir={output_dir}",
         f"--dataset={dataset}", "--headroom_episodes=2", *flags],
        check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    result = json.loads((Path(output_dir) / "best_of_n_diagnosis.json").read_text())
    assert result["headroom"]["all"]["num_states"] > 0
    assert set(result["actors"]) == {"base", "oracle_best_of_n", "oracle_expert"}
    expert = result["actors"]["oracle_expert"]
    assert expert["states"] == expert["states_relabeled"] > 0  # the expert labels every training state
    assert 0 < result["actors"]["oracle_best_of_n"]["states_relabeled"] <= expert["states"]
    assert 0.0 <= expert["success_rate"] <= 1.0


@pytest.mark.slow
def test_two_processes_train_critic_and_actor(tmp_path, noisy_expert_data) -> None:
    """``accelerate launch --num_processes 2 --cpu`` runs the distributed stages to completion."""
    out = tmp_path / "ddp"
    flags = [f"--{key}={value}" for key, value in TOY.items() if not isinstance(value, list)]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "examples" / "train.py"), f"--output_dir={out}", f"--dataset={noisy_expert_data}",
        "--skip_stages", "representation", "evaluate", *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "critic" / "model.safetensors").exists()
    assert (out / "actor" / "digiq" / "seed0" / "adapter_config.json").exists()


def test_threads_are_the_cores_shared_among_local_processes(monkeypatch) -> None:
    import os

    from digiq_trl.pipeline import threads_per_process

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads_per_process() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 2))
    assert threads_per_process() == 1  # never below one
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what accelerate launch sets for a single CPU process
    assert threads_per_process() == cores


def test_unknown_goal_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="_split: got"):
        DigiQPipelineConfig(eval_split="validation")
    with pytest.raises(ValueError, match="_split: got"):
        DigiQPipelineConfig(generalization_split="dev")
    assert DigiQPipelineConfig(generalization_split=None).generalization_split is None
    assert DigiQPipelineConfig(generalization_split="none").generalization_split is None


def _manifests(out: Path) -> dict[str, dict[str, str]]:
    """Every stage manifest's recorded file digests, by manifest folder."""
    return {str(m.parent.relative_to(out)): json.loads(m.read_text())["files"] for m in sorted(out.rglob("manifest.json"))}


@pytest.mark.slow
def test_runs_are_bitwise_reproducible_fresh_or_resumed_and_rerun_what_changed(tmp_path, noisy_expert_data, caplog) -> None:
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), dataset=noisy_expert_data,
                                 skip_stages=["evaluate"], **{**TOY, "actor_seeds": [0]})
    out = Path(config.output_dir)
    DigiQPipeline(config).run()
    first = _manifests(out)
    assert {"base_actor", "data", "representation", "features", "critic", "actor/digiq/seed0",
            "actor/filtered_bc/seed0"} <= set(first)
    # a second run from scratch, in the same process (whatever it ran before), and resumed runs
    # from each stage on: the same bytes in every stage output
    shutil.rmtree(out)
    DigiQPipeline(config).run()
    assert _manifests(out) == first
    for stage in ("representation", "critic", "actor"):
        shutil.rmtree(out / stage)
        DigiQPipeline(config).run()
        assert _manifests(out) == first, stage
    # nothing changed: every stage is reused
    caplog.set_level("INFO", logger="digiq_trl.pipeline")
    caplog.clear()
    again = DigiQPipeline(config)
    again.run()
    assert all(again.timings[stage] < 5 for stage in again.timings)
    assert "recomputing" not in caplog.text
    # a changed critic option retrains the critic and everything after it, and only those
    caplog.clear()
    changed = DigiQPipelineConfig(**{**config.__dict__, "critic_steps": TOY["critic_steps"] + 2})
    DigiQPipeline(changed).run()
    recomputed = {stage for stage in STAGES if re.search(f"stage {stage}: .* recomputing", caplog.text)}
    assert recomputed == {"critic", "actor"}
    assert "stage critic: the configuration changed" in caplog.text and "stage actor: an earlier stage changed" in caplog.text
    after = _manifests(out)
    assert all(after[name] == first[name] for name in ("base_actor", "data", "representation", "features"))
    assert after["critic"] != first["critic"]
    # a damaged output is a clear error that names the stage and the file
    weights = out / "critic" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(Exception, match=r"stage critic: .*model\.safetensors does not match its manifest"):
        DigiQPipeline(changed).run()


PAPER_ON_CPU = [  # the paper preset at the rehearsal's size: a tiny actor and text encoder, fp32, few steps
    "--base_actor=digiq-trl/phone-actor-tiny", "--critic_text_encoder=tiny", "--bf16=false",
    "--max_pixels=200704", "--critic_hidden_size=64", "--actor_batch_size=4", "--actor_gradient_accumulation_steps=1",
]


@pytest.mark.slow
@pytest.mark.parametrize(("source", "config"), [("aitw-tfrecord", "aitw_tiny_cpu"), ("digiq-pt", "aitw_tiny_cpu"),
                                                ("digiq-pt", "aitw_general_paper")])
def test_the_real_data_rehearsal_runs_end_to_end(tmp_path, source, config) -> None:
    """examples/configs/aitw_tiny_cpu.yaml on a converted AitW shard and a converted Digi-Q .pt file,
    and the paper preset on the .pt file (steps shortened): behavior cloning on the data, every
    stage, offline action matching."""
    from real_data import write_aitw_shard, write_digiq_pt

    from digiq_trl.data import convert_aitw_tfrecord, convert_digiq_pt

    if source == "aitw-tfrecord":
        dataset = convert_aitw_tfrecord([write_aitw_shard(tmp_path / "shard.tfrecord.gz", episodes=12)])
        extra = []
    else:
        path, images = write_digiq_pt(tmp_path / "pt", trajectories=16)  # 2 of the 3 test episodes succeed
        dataset = convert_digiq_pt([path], images_dir=images)
        extra = ["--candidate_source", "both"]
    if config == "aitw_general_paper":
        extra = [*extra, *PAPER_ON_CPU]
    dataset.save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), "--config",
         str(REPO / "examples" / "configs" / f"{config}.yaml"), f"--dataset={tmp_path / 'data'}",
         f"--output_dir={out}", "--bc_steps=6", "--representation_steps=3", "--critic_steps=10",
         "--actor_steps=2", "--num_candidates=2", "--num_threads=1", "--advantage_threshold=-1", *extra],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    metric = "successful_episode_action_match"  # the metric is named for what it measures
    assert results["metric"] == metric
    assert set(results["methods"]) == {"base", "filtered_bc", "digiq"}
    assert all(0.0 <= row[metric] <= 1.0 for row in results["methods"].values())
    assert (out / "report.md").exists() and (out / f"{metric}.png").exists()
    assert (out / "base_actor" / "manifest.json").exists()  # the tiny actor was cloned on the data
    assert f'"{metric}"' in done.stdout  # the printed table uses the run's metric
    filtered = json.loads((out / "actor" / "filtered_bc" / "seed0" / "preparation_metrics.json").read_text())
    if source == "digiq-pt":  # rollouts with failures: filtered BC imitates the successful ones only, unlike SFT
        assert 0 < filtered["frac_imitated"] < 1 and results["offline_evaluation"]["behavior_success_rate"] < 1
        preparation = json.loads((out / "actor" / "digiq" / "seed0" / "preparation_metrics.json").read_text())
        assert preparation["num_states"] > 0
    else:  # human demonstrations: every episode succeeded, filtered BC is SFT
        assert filtered["frac_imitated"] == 1 and results["offline_evaluation"]["behavior_success_rate"] == 1


def test_every_stage_gets_valid_trainer_arguments(tmp_path) -> None:
    config = DigiQPipelineConfig(output_dir=str(tmp_path))
    representation = config.representation_args(tmp_path / "representation")
    critic = config.critic_args(tmp_path / "critic")
    actor = config.actor_args("threshold", tmp_path / "actor", seed=3, preparation_cache_dir=tmp_path / "cache")
    assert representation.max_steps == config.representation_steps
    assert representation.per_device_train_batch_size == config.representation_batch_size
    assert critic.max_steps == config.critic_steps and critic.save_steps == config.critic_save_steps
    assert critic.per_device_eval_batch_size == 4 * config.critic_batch_size
    assert (actor.weighting, actor.anchor, actor.seed) == ("threshold", config.anchor, 3)
    assert actor.candidate_source == config.candidate_source and actor.num_candidates == config.num_candidates


@pytest.mark.slow
def test_every_field_a_stage_reads_is_in_its_fingerprint(finished_run) -> None:
    """A stage that read a field missing from its own and the earlier stages' STAGE_FIELDS would reuse a
    stale output when that field changes (the toy run records what each stage reads)."""
    from toy_run import READS

    from digiq_trl.fingerprints import STAGE_FIELDS, UNFINGERPRINTED_FIELDS

    assert {"data", "representation", "features", "critic", "actor"} <= set(READS)
    covered = set(UNFINGERPRINTED_FIELDS)
    for stage in STAGES[:-1]:
        covered |= set(STAGE_FIELDS[stage])
        assert READS.get(stage, set()) <= covered, (stage, sorted(READS[stage] - covered))



@pytest.mark.slow
def test_a_given_critic_replaces_the_representation_and_critic_stages(tmp_path, finished_run, caplog) -> None:
    """critic_model: a trained critic (here a finished run's, as it would come from the Hub) skips stages
    1 and 3; features come from its own recorded backbone, so Digi-Q's adapter is the one the finished
    run trained with that critic."""
    finished = Path(finished_run.output_dir)
    config = DigiQPipelineConfig(**{**finished_run.__dict__, "output_dir": str(tmp_path / "run"),
                                    "critic_model": str(finished / "critic")})
    caplog.set_level("INFO", logger="digiq_trl.pipeline")
    DigiQPipeline(config).run()
    out = Path(config.output_dir)
    assert not (out / "representation").exists() and not (out / "critic").exists()
    assert "stage critic: not run, using the given critic" in caplog.text
    adapter = "actor/digiq/seed0/adapter_model.safetensors"
    assert _manifests(out)["actor/digiq/seed0"][adapter] == _manifests(finished)["actor/digiq/seed0"][adapter]


def test_offline_evaluation_without_a_successful_test_episode_ends_before_any_training(tmp_path) -> None:
    """Offline action matching scores successful test episodes only: data whose test split has none
    is refused when behavior cloning first reads it, not after every stage has trained."""
    from real_data import write_digiq_pt

    from digiq_trl.data import convert_digiq_pt
    from digiq_trl.pipeline_checks import InvalidOptionError

    path, images = write_digiq_pt(tmp_path / "pt", trajectories=12)  # its 2 test episodes both failed
    convert_digiq_pt([path], images_dir=images).save_to_disk(str(tmp_path / "data"))
    config = DigiQPipelineConfig(output_dir=str(tmp_path / "run"), dataset=str(tmp_path / "data"), base_actor=None,
                                 bc_steps=1, evaluation="offline")
    with pytest.raises(InvalidOptionError, match=r"--test_size: got 0.2; .*none of the 2 test episodes succeeded"):
        DigiQPipeline(config).run()
    assert not (tmp_path / "run" / "base_actor").exists()

