"""Lockstep rollouts, ``collect_transitions`` and the ``digiq-trl collect`` command."""

import json

import numpy as np
import pytest
from datasets import load_from_disk

from digiq_trl.actions import parse_action
from digiq_trl.cli import main
from digiq_trl.data import discounted_returns, transition_features, validate_transitions
from digiq_trl.envs import ExpertPolicy, NoisyExpertPolicy, PhoneEnv, collect_transitions, run_episodes
from digiq_trl.envs.collect import NO_OP_ACTION


def _collect(seed: int, episodes: int = 6, batch_size: int = 4):
    return collect_transitions(
        "digiq_trl/Phone-general-v0", NoisyExpertPolicy(0.5, seed=seed), episodes, seed=seed, batch_size=batch_size
    )


def test_dataset_follows_the_schema_with_returns():
    ds = _collect(0)
    assert ds.features == transition_features(with_ui_boxes=True)
    validate_transitions(ds)
    assert len(set(ds["episode_id"])) == 6
    rows = ds.select_columns(["episode_id", "reward", "mc_return", "trajectory_reward", "done"]).to_list()
    for episode in sorted(set(ds["episode_id"])):
        part = [r for r in rows if r["episode_id"] == episode]
        expected = discounted_returns([r["reward"] for r in part], 0.95)
        assert [r["mc_return"] for r in part] == pytest.approx(expected)
        assert all(r["trajectory_reward"] == sum(p["reward"] for p in part) for r in part)
        assert [r["done"] for r in part] == [False] * (len(part) - 1) + [True]
    assert all(0 < len(boxes) for boxes in ds["ui_boxes"])


def test_same_seed_same_dataset_other_seed_differs():
    a, b, c = _collect(1), _collect(1), _collect(2)
    light = ["episode_id", "goal", "history", "action", "reward", "mc_return"]
    assert a.select_columns(light).to_list() == b.select_columns(light).to_list()
    assert a.with_format("arrow")["image"] == b.with_format("arrow")["image"]
    assert a.select_columns(light).to_list() != c.select_columns(light).to_list()


def test_next_image_is_the_following_image():
    ds = _collect(3, episodes=2, batch_size=2).with_format("arrow")
    images, next_images, done = ds["image"].to_pylist(), ds["next_image"].to_pylist(), ds["done"].to_pylist()
    for i in range(len(ds) - 1):
        if not done[i]:
            assert next_images[i]["bytes"] == images[i + 1]["bytes"]


def test_episodes_do_not_depend_on_batch_size():
    goals = lambda bs: {s.episode: s.observation["goal"]  # noqa: E731
                        for s in run_episodes(PhoneEnv("webshop"), ExpertPolicy(), 7, seed=5, batch_size=bs)}
    assert goals(1) == goals(3) == goals(7)


class _BatchRecorder:
    """Counts batch sizes and answers with junk, to check batching and unparsable handling."""

    def __init__(self):
        self.sizes = []

    def act(self, observations, infos):
        self.sizes.append(len(observations))
        return ["press the button"] * len(observations)


def test_policy_is_called_in_batches_and_junk_is_recorded_as_no_op():
    policy = _BatchRecorder()
    ds = collect_transitions(PhoneEnv("general", horizon=3), policy, 10, seed=0, batch_size=5)
    assert policy.sizes[0] == 5 and max(policy.sizes) == 5
    assert set(ds["action"]) == {NO_OP_ACTION} and len(ds) == 30
    assert parse_action(NO_OP_ACTION).is_tap
    assert set(ds["history"]) == {""}


def test_cli_collect_writes_and_replaces_atomically(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ds"
    argv = ["collect", "--suite", "webshop", "--policy", "expert", "--episodes", "3", "--seed", "0",
            "--output", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["success_rate"] == 1.0
    first = load_from_disk(str(out))
    validate_transitions(first)

    import digiq_trl.envs.collect_cli as cli

    def fail(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(cli, "collect_transitions", fail)
    with pytest.raises(RuntimeError):
        main(argv[:-1] + [str(out)])
    assert load_from_disk(str(out))["action"] == first["action"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_cli_refuses_to_overwrite_a_non_dataset_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["collect", "--policy", "random", "--episodes", "1", "--output", str(tmp_path)])
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_noisy_dataset_has_recoveries():
    ds = collect_transitions(PhoneEnv("general"), NoisyExpertPolicy(seed=0), 25, seed=0, batch_size=25)
    rows = ds.select_columns(["episode_id", "action", "reward"]).to_list()
    backs = sum(1 for r in rows if '"PRESS_BACK"' in r["action"] or '"PRESS_HOME"' in r["action"])
    assert backs > 0 and 0 < np.mean([r["reward"] for r in rows]) < 0.2


def test_env_kwargs_override_the_template():
    ds = collect_transitions("digiq_trl/Phone-webshop-v0", ExpertPolicy(), 2, seed=0, split="test", width=56,
                             height=112)
    assert ds[0]["episode_id"].startswith("webshop-test-seed0") and ds[0]["image"].size == (56, 112)
