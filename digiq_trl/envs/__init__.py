"""The simulated Android phone, its AitW task suites, behavior policies and data collection.

Importing this package registers ``digiq_trl/Phone-general-v0`` and ``digiq_trl/Phone-webshop-v0``
(the source phone) and ``digiq_trl/Phone-general-target-v0`` and ``digiq_trl/Phone-webshop-target-v0``
(the target phone: version drift and interruptions) with Gymnasium. The registration names the environment class by its import path, and the public
names below are imported on first use, so importing the package loads neither the simulator nor
``datasets`` (which collection needs).
"""

import gymnasium as gym

from .. import _lazy


for _suite in ("general", "webshop"):
    for _phone, _suffix in (("source", ""), ("target", "-target")):
        _env_id = f"digiq_trl/Phone-{_suite}{_suffix}-v0"
        if _env_id not in gym.registry:
            gym.register(id=_env_id, entry_point="digiq_trl.envs.phone:PhoneEnv",
                         kwargs={"suite": _suite, "phone": _phone})

_EXPORTS = {
    ".android": ("AndroidDeviceEnv",),
    ".collect": ("collect_transitions", "run_episodes"),
    ".phone": ("PhoneEnv",),
    ".policies": ("DEFAULT_NOISE", "ExpertPolicy", "NoisyExpertPolicy", "Policy", "RandomPolicy", "random_action"),
    ".tasks": ("Task", "is_success", "load_goals", "parse_goal"),
}

__all__ = _lazy.exported_names(_EXPORTS)
__getattr__, __dir__ = _lazy.lazy_exports(__name__, _EXPORTS)
