"""The simulated Android phone, its AitW task suites, behavior policies and data collection.

Importing this package registers ``digiq_trl/Phone-general-v0`` and ``digiq_trl/Phone-webshop-v0``
with Gymnasium.
"""

import gymnasium as gym

from .collect import collect_transitions, run_episodes
from .phone import PhoneEnv
from .policies import ExpertPolicy, NoisyExpertPolicy, Policy, RandomPolicy, random_action
from .tasks import Task, is_success, load_goals, parse_goal

DEFAULT_NOISE = NoisyExpertPolicy.DEFAULT_NOISE

for _suite in ("general", "webshop"):
    _env_id = f"digiq_trl/Phone-{_suite}-v0"
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point="digiq_trl.envs.phone:PhoneEnv", kwargs={"suite": _suite})

__all__ = [
    "DEFAULT_NOISE",
    "ExpertPolicy",
    "NoisyExpertPolicy",
    "PhoneEnv",
    "Policy",
    "RandomPolicy",
    "Task",
    "collect_transitions",
    "is_success",
    "load_goals",
    "parse_goal",
    "random_action",
    "run_episodes",
]
