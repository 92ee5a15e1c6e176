"""Evaluation: success rates in the simulator and offline action matching on logged data."""

import numpy as np
import pytest

from digiq_trl import (
    ActionType,
    DeviceAction,
    ExpertPolicy,
    RandomPolicy,
    collect_transitions,
    format_action,
    parse_action,
)
from digiq_trl.actions import actions_match
from digiq_trl.diagnostics import best_of_n_headroom, critic_expert_ranking, expert_agrees, oracle_targets
from digiq_trl.envs import NoisyExpertPolicy
from digiq_trl.envs.collect import replay_infos
from digiq_trl.evaluation import (
    action_kind_recall,
    action_matching_accuracy,
    changed_share,
    evaluate_policy,
    evaluate_policy_seeds,
    goal_predictability_auroc,
)
from digiq_trl.models.scoring import Scores


@pytest.fixture(scope="module")
def expert_data():
    return collect_transitions("digiq_trl/Phone-general-v0", ExpertPolicy(), 6, seed=3)


class Replay:
    """Answers with the logged actions of a dataset, in order (a perfect offline policy)."""

    def __init__(self, actions, corrupt_every: int = 0) -> None:
        self.actions, self.corrupt_every, self.calls = list(actions), corrupt_every, 0

    def act(self, observations, infos):
        answers = []
        for _ in observations:
            answer = self.actions[self.calls]
            if self.corrupt_every and self.calls % self.corrupt_every == 0:
                answer = "no idea"
            answers.append(answer)
            self.calls += 1
        return answers


def test_replaying_the_logged_actions_matches_everything(expert_data) -> None:
    result = action_matching_accuracy(Replay(expert_data["action"]), expert_data, batch_size=4)
    assert result["accuracy"] == 1.0 and result["valid_rate"] == 1.0
    assert result["num_steps"] == len(expert_data)


def test_unparsable_answers_count_as_misses(expert_data) -> None:
    result = action_matching_accuracy(Replay(expert_data["action"], corrupt_every=2), expert_data)
    expected = sum(i % 2 != 0 for i in range(len(expert_data))) / len(expert_data)
    assert result["accuracy"] == pytest.approx(expected)
    assert result["valid_rate"] == pytest.approx(expected)


def test_a_constant_back_press_matches_exactly_the_back_steps(expert_data) -> None:
    back = format_action(DeviceAction.press(ActionType.PRESS_BACK))
    logged = [parse_action(a).action_type for a in expert_data["action"]]
    result = action_matching_accuracy(Replay([back] * len(expert_data)), expert_data)
    assert result["accuracy"] == pytest.approx(logged.count(ActionType.PRESS_BACK) / len(logged))
    assert result["accuracy_by_type"]["DUAL_POINT"] == 0.0


def test_expert_beats_random_in_the_simulator() -> None:
    expert = evaluate_policy(ExpertPolicy(), "general", split="heldout", num_episodes=20, seed=1)
    random = evaluate_policy(RandomPolicy(seed=0), "general", split="heldout", num_episodes=20, seed=1)
    assert expert["success_rate"] == 1.0 and random["success_rate"] < 0.2
    seeds = evaluate_policy_seeds(ExpertPolicy(), "general", seeds=(0, 1), num_episodes=5)
    assert seeds["num_seeds"] == 2 and seeds["stderr"] == 0.0


class _FirstCandidateScorer:
    """A stand-in CriticScorer: the first candidate of a state (the expert's / the actor's own
    action) gets Q = A = ``sign``, the others 0, and V = 0."""

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def score(self, images, goals, histories, actions):
        values = [np.array([self.sign] + [0.0] * (len(a) - 1)) for a in actions]
        return [Scores(q=v, v=0.0, advantage=v) for v in values]


@pytest.mark.parametrize(("sign", "expected"), [(1.0, 1.0), (-1.0, 0.0)])
def test_critic_expert_ranking_compares_expert_with_random(sign, expected) -> None:
    result = critic_expert_ranking(_FirstCandidateScorer(sign), "general", ExpertPolicy(),
                                   num_episodes=3, num_alternatives=2)
    assert result["expert_vs_random_ranking"] == expected and result["num_states"] > 0


def test_goal_predictability_auroc_separates_goal_driven_from_goal_blind_success():
    goals = ["easy", "hard", "mid", "mid"] * 30
    driven = [g == "easy" or (g == "mid" and i % 8 < 4) for i, g in enumerate(goals)]
    # easy always, hard never, mid half the time: the best score ties mid's successes with its
    # failures, so its AUROC is (1 + 1 + 1 + 0.5) / 4 = 0.875
    assert goal_predictability_auroc(goals, driven) == pytest.approx(0.875, abs=0.03)
    blind = [i // 4 % 2 == 0 for i in range(len(goals))]  # every goal succeeds half the time
    assert goal_predictability_auroc(goals, blind) < 0.6


def test_goal_predictability_auroc_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 goals but 2 successes"):
        goal_predictability_auroc(["a", "b", "c"], [True, False])


class _ExpertWithBadSamples(ExpertPolicy):
    """Acts like the expert; its samples are all PRESS_HOME or unparsable."""

    def sample(self, observations, num_candidates, temperature):
        home = format_action(DeviceAction.press(ActionType.PRESS_HOME))
        return [[home, "not an action"] * (num_candidates // 2) for _ in observations]


@pytest.mark.parametrize(("sign", "critic_hits"), [(1.0, 1.0), (-1.0, 0.0)])
def test_best_of_n_headroom_counts_greedy_any_and_critic_choice(sign, critic_hits) -> None:
    # the stand-in extractor gives the actor's own (expert) action feature 1 and the samples 0, so
    # a positive critic picks it and a negative one picks the first sample (a PRESS_HOME, which
    # the expert never needs on these tasks' paths)
    result = best_of_n_headroom(_FirstCandidateScorer(sign), "general", _ExpertWithBadSamples(),
                                num_candidates=4, num_episodes=4, every=1)
    assert result["all"]["greedy"] == 1.0 and result["all"]["any"] == 1.0
    assert result["all"]["critic"] == critic_hits
    assert result["all"]["num_states"] == sum(r["num_states"] for k, r in result.items() if k != "all")


def test_expert_agrees_uses_the_simulators_query_test_for_typing() -> None:
    expert = DeviceAction.type_text("capital Panama")
    prefix = DeviceAction.type_text("capital")
    assert actions_match(prefix, expert)  # AitW containment accepts a typed prefix
    assert not expert_agrees(prefix, expert, [])
    assert expert_agrees(DeviceAction.type_text("Capital of  panama"), expert, [])
    assert not expert_agrees(DeviceAction.type_text("capital Canada"), expert, [])
    assert not expert_agrees(None, expert, [])
    home = DeviceAction.press(ActionType.PRESS_HOME)
    assert expert_agrees(home, home, []) and not expert_agrees(home, DeviceAction.press(ActionType.PRESS_BACK), [])


class _RecordingNoisyExpert(NoisyExpertPolicy):
    """A noisy expert that remembers the expert action the env offered in every state it saw."""

    def __init__(self) -> None:
        super().__init__(seed=1)
        self.experts: list[str] = []

    def act(self, observations, infos):
        self.experts += [info["expert_action"] for info in infos]
        return super().act(observations, infos)


def test_replay_recovers_the_expert_action_of_every_logged_state() -> None:
    policy = _RecordingNoisyExpert()
    noisy = collect_transitions("digiq_trl/Phone-general-v0", policy, 6, seed=2, batch_size=1)
    assert [i["expert_action"] for i in replay_infos(noisy)] == policy.experts  # one phone: rows in the order they were played
    assert policy.experts != list(noisy["action"])  # the noise took other actions
    shuffled = noisy.add_column("row", list(range(len(noisy)))).shuffle(seed=0)  # any row order works
    assert [i["expert_action"] for i in replay_infos(shuffled)] == [policy.experts[i] for i in shuffled["row"]]
    with pytest.raises(ValueError, match="needs every step of each episode"):
        replay_infos(noisy.select([i for i in range(len(noisy)) if i != 1]))
    wrong_goal = noisy.map(lambda row: {"goal": "Open Settings"})
    with pytest.raises(ValueError, match="replayed goal or screen differs"):
        replay_infos(wrong_goal)
    with pytest.raises(ValueError, match="does not name a simulator episode"):
        replay_infos(noisy.map(lambda row: {"episode_id": "aitw-123"}))


def test_oracle_targets_relabel_with_the_first_right_candidate_or_fall_back() -> None:
    data = collect_transitions("digiq_trl/Phone-general-v0", NoisyExpertPolicy(seed=0), 4, seed=1)
    infos = replay_infos(data)
    experts = [info["expert_action"] for info in infos]
    home = format_action(DeviceAction.press(ActionType.PRESS_HOME))
    # each state: an unparsable candidate, HOME, then (in even rows) the expert's own action
    candidates = [["nonsense", home] + ([e] if i % 2 == 0 else []) for i, e in enumerate(experts)]
    targets = oracle_targets(data, candidates, infos)
    best = targets["best_of_n"]
    for i, (expert, row) in enumerate(zip(experts, best)):
        expert_home = parse_action(expert) == parse_action(home)
        if expert_home or i % 2 == 0:
            assert (row["relabeled"], row["trajectory_reward"]) == (True, 1.0)
            assert row["action"] == (home if expert_home else expert)
        else:  # no right candidate: the state falls back to its anchor
            assert (row["relabeled"], row["trajectory_reward"]) == (False, 0.0)
    assert targets["expert"]["action"] == experts and set(targets["expert"]["trajectory_reward"]) == {1.0}
    assert set(targets["expert"]["relabeled"]) == {True}
    assert best["goal"] == data["goal"] and best["ui_boxes"] == data["ui_boxes"]
    with pytest.raises(ValueError, match="candidate lists"):
        oracle_targets(data, candidates[:-1], infos)


def test_action_kind_recall_and_changed_share_by_hand() -> None:
    tap = format_action(DeviceAction.tap(0.5, 0.5))
    swipe = format_action(DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)))
    enter = format_action(DeviceAction.press(ActionType.PRESS_ENTER))
    typed = format_action(DeviceAction.type_text("news Chile"))
    other = format_action(DeviceAction.type_text("news Peru"))
    reference = [enter, enter, enter, enter, tap, swipe, typed]
    predicted = [enter, enter, enter, tap, tap, tap, other]  # a different text is still a TYPE
    recall = action_kind_recall(predicted, reference)
    assert recall == {"enter": {"recall": 0.75, "count": 4}, "swipe": {"recall": 0.0, "count": 1},
                      "tap": {"recall": 1.0, "count": 1}, "type": {"recall": 1.0, "count": 1}}
    assert action_kind_recall(["garbage"], [enter]) == {"enter": {"recall": 0.0, "count": 1}}
    assert changed_share(predicted, reference) == pytest.approx(3 / 7)
    with pytest.raises(ValueError):
        changed_share(predicted, reference[:-1])


def test_success_per_task_kind_adds_up_over_seeds() -> None:
    run = evaluate_policy_seeds(ExpertPolicy(), "general", seeds=(0, 1), split="test", num_episodes=6)
    assert sum(row["episodes"] for row in run["by_kind"].values()) == 12 == run["num_episodes"]
    assert all(row["success_rate"] == 1.0 for row in run["by_kind"].values())
    single = evaluate_policy_seeds(RandomPolicy(seed=0), "general", seeds=(0,), num_episodes=20)
    rate = single["success_rate"]
    assert single["stderr"] == pytest.approx((rate * (1 - rate) / 20) ** 0.5)  # binomial with one seed
    assert single["pooled_stderr"] == single["stderr"]


def test_the_papers_protocol_plays_the_first_test_goals_in_order() -> None:
    from digiq_trl.envs import ExpertPolicy
    from digiq_trl.envs.tasks import load_goals
    from digiq_trl.evaluation import evaluate_policy, first_goals
    from digiq_trl.pipeline_config import DigiQPipelineConfig

    run = evaluate_policy(ExpertPolicy(), "general", split="test", num_episodes=6, goals="first", phone="target")
    assert [e["goal"] for e in run["episodes"]] == list(load_goals("general", "test")[:6]) == first_goals("general", "test", 6)
    assert run["success_rate"] == 1.0 and all(e["actions"] for e in run["episodes"])
    with pytest.raises(ValueError, match="fewer than"):
        first_goals("general", "test", 10_000)
    with pytest.raises(ValueError, match="goals must be"):
        evaluate_policy(ExpertPolicy(), "general", num_episodes=1, goals="last")
    for field, value in (("eval_goals", "last"), ("eval_temperature", -0.5)):
        with pytest.raises(ValueError, match=field):
            DigiQPipelineConfig(**{field: value})
