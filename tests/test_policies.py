"""Scripted behavior policies and the success-rate evaluation."""

import numpy as np
import pytest

from digiq_trl.actions import try_parse_action
from digiq_trl.envs import ExpertPolicy, NoisyExpertPolicy, PhoneEnv, Policy, RandomPolicy, random_action
from digiq_trl.evaluation import evaluate_policy, evaluate_policy_seeds


def _states(count: int = 6) -> tuple[list[dict], list[dict]]:
    env = PhoneEnv("general")
    pairs = [env.reset(seed=s) for s in range(count)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_policies_follow_the_protocol_and_return_valid_actions():
    observations, infos = _states()
    for policy in (ExpertPolicy(), NoisyExpertPolicy(0.5, seed=0), RandomPolicy(seed=0)):
        assert isinstance(policy, Policy)
        actions = policy.act(observations, infos)
        assert len(actions) == len(observations)
        assert all(try_parse_action(a) is not None for a in actions)


def test_noise_extremes_and_seeding():
    observations, infos = _states()
    expert = [info["expert_action"] for info in infos]
    assert ExpertPolicy().act(observations, infos) == expert
    assert NoisyExpertPolicy(0.0, seed=1).act(observations, infos) == expert
    assert NoisyExpertPolicy(1.0, seed=1).act(observations, infos) != expert
    assert NoisyExpertPolicy(0.5, seed=3).act(observations, infos) == NoisyExpertPolicy(0.5, seed=3).act(
        observations, infos
    )
    with pytest.raises(ValueError):
        NoisyExpertPolicy(1.5)


def test_scripted_policies_need_expert_info():
    observations, _ = _states(1)
    with pytest.raises(KeyError):
        ExpertPolicy().act(observations, [{}])


def test_random_action_covers_every_type_and_is_valid():
    rng = np.random.default_rng(0)
    actions = [random_action(rng, "Search for hotels in Paris") for _ in range(500)]
    assert all(a.is_valid for a in actions)
    assert len({a.action_type for a in actions}) == 7
    assert any(a.is_swipe for a in actions)


def test_success_rates_order_expert_noisy_random():
    expert = evaluate_policy(ExpertPolicy(), "general", num_episodes=40, batch_size=20)
    noisy = evaluate_policy(NoisyExpertPolicy(seed=0), "general", num_episodes=40, batch_size=20)
    random = evaluate_policy(RandomPolicy(seed=0), "general", num_episodes=40, batch_size=20)
    assert expert["success_rate"] == 1.0 and expert["stderr"] == 0.0
    assert 0.1 <= noisy["success_rate"] <= 0.5
    assert random["success_rate"] <= 0.1
    assert expert["mean_episode_length"] < noisy["mean_episode_length"] <= 10
    assert noisy["stderr"] == pytest.approx(np.sqrt(noisy["success_rate"] * (1 - noisy["success_rate"]) / 40))


def test_evaluate_policy_seeds_aggregates():
    result = evaluate_policy_seeds(NoisyExpertPolicy(seed=0), "webshop", seeds=(0, 1, 2), num_episodes=10,
                                   batch_size=10)
    rates = [run["success_rate"] for run in result["per_seed"]]
    assert result["num_seeds"] == 3 and result["success_rate"] == pytest.approx(np.mean(rates))
    assert result["stderr"] == pytest.approx(np.std(rates, ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError):
        evaluate_policy_seeds(ExpertPolicy(), "general", seeds=())
