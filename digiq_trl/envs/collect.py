"""Running policies in many phones in lockstep, and turning the steps into a transitions dataset.

:func:`run_episodes` is the one rollout loop: it keeps ``batch_size`` env copies busy, calls the
policy once per lockstep tick on all live states (so a VLM policy generates in batches), and yields
every step. Collection (:func:`collect_transitions`) and evaluation
(:func:`digiq_trl.evaluation.evaluate_policy`) both consume it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from datasets import Dataset

from ..actions import DeviceAction, format_action, try_parse_action
from ..data import transition_features, validate_transitions
from ..data.returns import episode_returns
from .phone import PhoneEnv
from .policies import Policy


NO_OP_ACTION = format_action(DeviceAction.tap(0.0, 0.0))
"""How an unparsable action is recorded: a tap on the status bar corner, which has no effect either."""


@dataclass
class Step:
    """One step of one episode, as :func:`run_episodes` yields it."""

    episode: int
    step: int
    observation: dict[str, Any]
    info: dict[str, Any]
    action: str
    reward: float
    done: bool
    next_observation: dict[str, Any]
    next_info: dict[str, Any]


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of episode ``episode`` of a run seeded ``seed`` (independent of batching)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def make_envs(env_or_id: PhoneEnv | str, count: int, **env_kwargs: Any) -> list[PhoneEnv]:
    """``count`` independent phones configured like ``env_or_id`` (an env or a registered id).

    ``env_kwargs`` override the configuration (e.g. ``split="test"``).
    """
    template = gym.make(env_or_id).unwrapped if isinstance(env_or_id, str) else env_or_id
    if not isinstance(template, PhoneEnv):
        raise TypeError(f"expected a PhoneEnv or its id, got {type(template).__name__}")
    return [PhoneEnv(**{**template.config, **env_kwargs}) for _ in range(count)]


def recorded_action(action: DeviceAction | str) -> str:
    """The canonical AutoUI string of a policy's action (:data:`NO_OP_ACTION` if unparsable)."""
    parsed = try_parse_action(action) if isinstance(action, str) else action
    if isinstance(parsed, DeviceAction) and parsed.is_valid:
        return format_action(parsed)
    return NO_OP_ACTION


def run_episodes(
    env_or_id: PhoneEnv | str,
    policy: Policy,
    num_episodes: int,
    seed: int = 0,
    batch_size: int = 64,
    **env_kwargs: Any,
) -> Iterator[Step]:
    """Play ``num_episodes`` episodes with ``policy`` on ``batch_size`` phones in lockstep.

    Episode ``i`` always resets with :func:`episode_seed` ``(seed, i)``, so its goal and layout do
    not depend on batching; a seeded policy also gives identical steps for the same batch size.
    Steps come out in the order they happen (episodes interleaved).
    """
    envs = make_envs(env_or_id, max(1, min(batch_size, num_episodes)), **env_kwargs)
    slots: list[dict[str, Any] | None] = [None] * len(envs)
    next_episode = 0
    for k, env in enumerate(envs):
        slots[k], next_episode = _start(env, next_episode, num_episodes, seed)
    while any(slots):
        live = [k for k, slot in enumerate(slots) if slot]
        actions = policy.act([slots[k]["obs"] for k in live], [slots[k]["info"] for k in live])
        if len(actions) != len(live):
            raise ValueError(f"policy returned {len(actions)} actions for {len(live)} observations")
        for k, action in zip(live, actions):
            slot = slots[k]
            obs, reward, terminated, truncated, info = envs[k].step(action)
            done = terminated or truncated
            yield Step(slot["episode"], slot["step"], slot["obs"], slot["info"], recorded_action(action),
                       float(reward), done, obs, info)
            if done:
                slots[k], next_episode = _start(envs[k], next_episode, num_episodes, seed)
            else:
                slot.update(obs=obs, info=info, step=slot["step"] + 1)


def _start(env: PhoneEnv, episode: int, num_episodes: int, seed: int) -> tuple[dict | None, int]:
    if episode >= num_episodes:
        return None, episode
    obs, info = env.reset(seed=episode_seed(seed, episode))
    return {"episode": episode, "step": 0, "obs": obs, "info": info}, episode + 1


def collect_transitions(
    env_or_id: PhoneEnv | str,
    policy: Policy,
    num_episodes: int,
    seed: int = 0,
    gamma: float = 0.95,
    batch_size: int = 64,
    **env_kwargs: Any,
) -> Dataset:
    """Roll out ``policy`` and return the steps as a validated transitions dataset.

    The dataset follows the canonical schema with ``ui_boxes`` (the boxes of the screen the action
    was taken on), rows sorted by episode and step, ``mc_return`` and ``trajectory_reward`` filled.
    Same arguments (seed, batch size, a freshly seeded policy) give an identical dataset.

    Args:
        env_or_id: a :class:`PhoneEnv` to copy, or a registered id such as
            ``"digiq_trl/Phone-general-v0"``; ``env_kwargs`` override its configuration.
        policy: any :class:`~digiq_trl.envs.Policy`.
        num_episodes: how many episodes to play.
        seed: seeds the episodes (goals, layouts).
        gamma: discount of the Monte-Carlo returns.
        batch_size: phones run in lockstep (the policy's batch size).
    """
    env = make_envs(env_or_id, 1, **env_kwargs)[0]
    steps = sorted(run_episodes(env, policy, num_episodes, seed, batch_size), key=lambda s: (s.episode, s.step))
    name = _run_name(env, seed)
    columns = _columns(steps, name)
    mc, totals = episode_returns(columns["episode_id"], columns["reward"], gamma)
    columns.update(mc_return=mc, trajectory_reward=totals)
    features = transition_features(with_ui_boxes=True)
    ds = Dataset.from_dict({key: columns[key] for key in features}, features=features)
    return validate_transitions(ds, source=name)


def _run_name(env: PhoneEnv, seed: int) -> str:
    return f"{env.suite}-{env.split}-seed{seed}"


def _columns(steps: list[Step], name: str) -> dict[str, list]:
    return {
        "episode_id": [f"{name}-ep{s.episode:06d}" for s in steps],
        "step_id": [s.step for s in steps],
        "goal": [s.observation["goal"] for s in steps],
        "history": [s.observation["history"] for s in steps],
        "image": [s.observation["image"] for s in steps],
        "next_image": [s.next_observation["image"] for s in steps],
        "action": [s.action for s in steps],
        "reward": [s.reward for s in steps],
        "done": [s.done for s in steps],
        "ui_boxes": [s.info["ui_boxes"] for s in steps],
    }


_EPISODE_ID = re.compile(r"^(?P<suite>[a-z]+)-(?P<split>[a-z]+)-seed(?P<seed>-?\d+)-ep(?P<episode>\d+)$")


def replay_infos(dataset: Dataset, **env_kwargs: Any) -> list[dict[str, Any]]:
    """The simulator's ``info`` in every state of a dataset that :func:`collect_transitions` made:
    the expert's action (``expert_action``), the interruption on screen (``overlay``), ...

    Each episode is replayed: the phone is reset with the episode's own seed (read from its
    ``episode_id``) and the logged actions are applied in order, reading ``info`` before each. This
    labels offline data with what a perfect critic would know, for diagnosis (the oracles of
    ``digiq-trl diagnose``); nothing in training uses it.

    Args:
        dataset: transitions whose ``episode_id`` reads ``<suite>-<split>-seed<seed>-ep<index>``.
        env_kwargs: the phone's configuration at collection (e.g. ``layout``).

    Raises:
        ValueError: an ``episode_id`` is not of that form, or a replayed episode's goal or screenshot
            differs from the logged one (the data was not collected in this simulator this way).
    """
    columns = dataset.select_columns(["episode_id", "step_id", "goal", "action"]).to_dict()
    images = dataset.select_columns(["image"])
    order = sorted(range(len(dataset)), key=lambda i: (columns["episode_id"][i], columns["step_id"][i]))
    infos: list[dict[str, Any]] = [{}] * len(dataset)
    envs: dict[tuple[str, str], PhoneEnv] = {}
    env: PhoneEnv | None = None
    current, observation, info, step = None, {}, {}, 0
    for i in order:
        episode_id = columns["episode_id"][i]
        if episode_id != current:
            match = _EPISODE_ID.match(episode_id)
            if match is None:
                raise ValueError(f"row {i}: episode_id {episode_id!r} does not name a simulator episode "
                                 "(<suite>-<split>-seed<seed>-ep<index>)")
            key = (match["suite"], match["split"])
            env = envs.setdefault(key, PhoneEnv(suite=key[0], split=key[1], **env_kwargs))
            observation, info = env.reset(seed=episode_seed(int(match["seed"]), int(match["episode"])))
            current, step = episode_id, 0
        if columns["step_id"][i] != step:
            raise ValueError(f"row {i} ({episode_id}): step {columns['step_id'][i]} comes where step {step} should; "
                             "replaying needs every step of each episode")
        if observation["goal"] != columns["goal"][i] or not np.array_equal(
            np.asarray(observation["image"]), np.asarray(images[i]["image"].convert("RGB"))
        ):
            raise ValueError(f"row {i} ({episode_id}, step {columns['step_id'][i]}): the replayed goal or screen "
                             "differs from the logged one")
        infos[i] = info
        observation, _, _, _, info = env.step(columns["action"][i])
        step += 1
    return infos
