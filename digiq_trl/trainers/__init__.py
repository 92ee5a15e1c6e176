"""Trainers: one ``<name>_config.py`` + ``<name>_trainer.py`` pair per stage."""

from .actor_config import BestOfNActorConfig
from .actor_trainer import BestOfNActorTrainer
from .behavior_cloning import behavior_clone, expert_demonstrations, transitions_to_sft
from .critic_collator import DigiQCriticCollator
from .critic_config import DigiQCriticConfig
from .critic_trainer import DigiQCriticTrainer, TargetNetworkUpdateCallback
from .representation_config import RepresentationConfig
from .representation_trainer import RepresentationTrainer, train_representation


__all__ = [
    "BestOfNActorConfig",
    "BestOfNActorTrainer",
    "DigiQCriticCollator",
    "DigiQCriticConfig",
    "DigiQCriticTrainer",
    "RepresentationConfig",
    "RepresentationTrainer",
    "TargetNetworkUpdateCallback",
    "behavior_clone",
    "expert_demonstrations",
    "train_representation",
    "transitions_to_sft",
]
