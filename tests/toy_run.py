"""The toy-sized run shared by the end-to-end tests: options and offline data with successes and failures."""

from dataclasses import fields
from pathlib import Path

from digiq_trl.envs import NoisyExpertPolicy, collect_transitions
from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig


TOY = dict(  # the offline data below come from the source phone, so the runs use it too
    phone="source", bc_episodes=20, bc_steps=4, representation_steps=3, critic_steps=10, critic_batch_size=16,
    actor_steps=2, actor_batch_size=4, num_candidates=2, eval_episodes=4, eval_seeds=[0],
    ranking_alternatives=2, advantage_threshold=-1.0, num_threads=1, test_size=0.4, actor_seeds=[0, 1],
)


def save_noisy_expert_data(path: Path, episodes: int = 40, seed: int = 0) -> str:
    """Diverse offline data with successes and failures (a toy base actor would rarely succeed)."""
    collect_transitions("digiq_trl/Phone-general-v0", NoisyExpertPolicy(seed=seed), episodes, seed=seed).save_to_disk(
        str(path))
    return str(path)


class RecordingConfig(DigiQPipelineConfig):
    """A pipeline config that records which of its fields each stage reads (:data:`READS`)."""

    current: str | None = None  # the running stage; a class attribute, not a field

    def __getattribute__(self, name: str):
        stage = type(self).current
        if stage is not None and name in FIELD_NAMES:
            READS.setdefault(stage, set()).add(name)
        return super().__getattribute__(name)


class RecordingPipeline(DigiQPipeline):
    """Runs each stage with :attr:`RecordingConfig.current` set to its name."""

    def __getattribute__(self, name: str):
        attr = super().__getattribute__(name)
        if not name.startswith("stage_"):
            return attr

        def recorded(fingerprint: str):
            RecordingConfig.current = name.removeprefix("stage_")
            try:
                return attr(fingerprint)
            finally:
                RecordingConfig.current = None

        return recorded


FIELD_NAMES = frozenset(f.name for f in fields(DigiQPipelineConfig))
READS: dict[str, set[str]] = {}
"""The config fields each stage read in the runs of :class:`RecordingPipeline`."""
