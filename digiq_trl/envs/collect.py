"""Running policies in many phones in lockstep, and turning the steps into a transitions dataset.

:func:`run_episodes` is the one rollout loop: it keeps ``batch_size`` env copies busy, calls the
policy once per lockstep tick on all live states (so a VLM policy generates in batches), and yields
every step. Collection (:func:`collect_transitions`) and evaluation
(:func:`digiq_trl.evaluation.evaluate_policy`) both consume it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from datasets import Dataset

from ..actions import DeviceAction, format_action, try_parse_action
from ..data import transition_features, validate_transitions
from ..data.returns import episode_returns
from ..discount import DEFAULT_GAMMA
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


def make_envs(env_or_id: PhoneEnv | str | Sequence[gym.Env], count: int, **env_kwargs: Any) -> list[gym.Env]:
    """``count`` independent phones configured like ``env_or_id`` (an env or a registered id), or,
    for a sequence of envs (e.g. :class:`~digiq_trl.envs.android.AndroidDeviceEnv` devices), those envs.

    ``env_kwargs`` override the simulator's configuration (e.g. ``split="test"``).
    """
    if isinstance(env_or_id, Sequence) and not isinstance(env_or_id, str):
        if not env_or_id or env_kwargs:
            raise ValueError("give at least one env, and configure envs you pass yourself")
        return list(env_or_id)
    template = gym.make(env_or_id).unwrapped if isinstance(env_or_id, str) else env_or_id
    if not isinstance(template, PhoneEnv):
        raise TypeError(f"expected a PhoneEnv, its id or a list of envs, got {type(template).__name__}")
    return [PhoneEnv(**{**template.config, **env_kwargs}) for _ in range(count)]


def recorded_action(action: DeviceAction | str) -> str:
    """The canonical AutoUI string of a policy's action (:data:`NO_OP_ACTION` if unparsable)."""
    parsed = try_parse_action(action) if isinstance(action, str) else action
    if isinstance(parsed, DeviceAction) and parsed.is_valid:
        return format_action(parsed)
    return NO_OP_ACTION


def run_episodes(
    env_or_id: PhoneEnv | str | Sequence[gym.Env],
    policy: Policy,
    num_episodes: int,
    seed: int = 0,
    batch_size: int = 64,
    goals: Sequence[str] | None = None,
    **env_kwargs: Any,
) -> Iterator[Step]:
    """Play ``num_episodes`` episodes with ``policy`` on ``batch_size`` phones in lockstep.

    Episode ``i`` always resets with :func:`episode_seed` ``(seed, i)`` (and goal ``goals[i]`` when
    ``goals`` is given), so its goal and layout do not depend on batching; a seeded policy also gives
    identical steps for the same batch size. Given a list of envs (devices), they are the batch.
    Steps come out in the order they happen (episodes interleaved). An episode whose reset reports
    an ``error`` (a device that failed) ends there: it yields one step that takes no action
    (:data:`NO_OP_ACTION`, ``done``) with that ``info``, and that env sits out the rest of the run
    while another still works (the last one left tries every remaining episode).
    """
    if goals is not None and len(goals) < num_episodes:
        raise ValueError(f"{len(goals)} goals for {num_episodes} episodes")
    envs = make_envs(env_or_id, max(1, min(batch_size, num_episodes)), **env_kwargs)
    slots: list[dict[str, Any] | None] = [None] * len(envs)
    upcoming = iter(range(num_episodes))
    retired: set[int] = set()
    while True:
        for k, env in enumerate(envs):
            sits_out = k in retired and len(retired) < len(envs)
            while slots[k] is None and not sits_out and (episode := next(upcoming, None)) is not None:
                options = {"goal": goals[episode]} if goals is not None else None
                obs, info = env.reset(seed=episode_seed(seed, episode), options=options)
                if info.get("error"):
                    retired.add(k)
                    sits_out = len(retired) < len(envs)
                    yield Step(episode, 0, obs, info, NO_OP_ACTION, 0.0, True, obs, info)
                else:
                    slots[k] = {"episode": episode, "step": 0, "obs": obs, "info": info}
        live = [k for k, slot in enumerate(slots) if slot]
        if not live:
            return
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
                slots[k] = None
            else:
                slot.update(obs=obs, info=info, step=slot["step"] + 1)


def collect_transitions(
    env_or_id: PhoneEnv | str | Sequence[gym.Env],
    policy: Policy,
    num_episodes: int,
    seed: int = 0,
    gamma: float = DEFAULT_GAMMA,
    batch_size: int = 64,
    **env_kwargs: Any,
) -> Dataset:
    """Roll out ``policy`` and return the steps as a validated transitions dataset.

    The dataset follows the canonical schema with ``ui_boxes`` (the boxes of the screen the action
    was taken on), rows sorted by episode and step, ``mc_return`` and ``trajectory_reward`` filled.
    Same arguments (seed, batch size, a freshly seeded policy) give an identical dataset. Episodes
    that a device ended with an ``error`` are left out (their last screens are missing).

    Args:
        env_or_id: a :class:`PhoneEnv` to copy, a registered id such as
            ``"digiq_trl/Phone-general-v0"`` (``env_kwargs`` override its configuration), or a list
            of :class:`~digiq_trl.envs.android.AndroidDeviceEnv` devices (the batch).
        policy: any :class:`~digiq_trl.envs.Policy`.
        num_episodes: how many episodes to play.
        seed: seeds the episodes (goals, layouts).
        gamma: discount of the Monte-Carlo returns.
        batch_size: phones run in lockstep (the policy's batch size); a list of devices is its own batch.
    """
    envs = make_envs(env_or_id, max(1, min(batch_size, num_episodes)), **env_kwargs)
    steps = list(run_episodes(envs, policy, num_episodes, seed))
    failed = {s.episode for s in steps if s.next_info.get("error")}
    return transitions_from_steps([s for s in steps if s.episode not in failed], run_name(envs[0], seed), gamma)


def run_name(env: gym.Env, seed: int) -> str:
    """The prefix of a run's episode ids: ``<suite>-<split>-seed<seed>`` in the simulator (what
    :func:`replay_infos` reads back), ``device-<suite>-<split>-seed<seed>`` on a device."""
    name = f"{env.suite}-{env.split}-seed{seed}"
    return name if isinstance(env, PhoneEnv) else f"device-{name}"


def transitions_from_steps(steps: Sequence[Step], name: str, gamma: float = DEFAULT_GAMMA) -> Dataset:
    """The validated transitions dataset of finished episodes' steps, episode ids ``<name>-ep<index>``."""
    steps = sorted(steps, key=lambda s: (s.episode, s.step))
    columns = _columns(steps, name)
    mc, totals = episode_returns(columns["episode_id"], columns["reward"], gamma)
    columns.update(mc_return=mc, trajectory_reward=totals)
    features = transition_features(with_ui_boxes=True)
    ds = Dataset.from_dict({key: columns[key] for key in features}, features=features)
    return validate_transitions(ds, source=name)


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
                             f"differs from the logged one; were the data collected on this phone ({env_kwargs})?")
        infos[i] = info
        observation, _, _, _, info = env.step(columns["action"][i])
        step += 1
    return infos
