"""Is the critic or the actor what limits Best-of-N? Diagnose a finished simulator run.

Point it at the ``output_dir`` of ``examples/train.py`` with the same flags or ``--config`` (it reads
the run's base actor, critic and feature backbone). It needs the simulator, whose scripted expert
plays the part of a perfect critic:

    python examples/diagnose_best_of_n.py                     # the embedded default's run
    python examples/diagnose_best_of_n.py --config examples/configs/simulator_webshop.yaml
    python examples/diagnose_best_of_n.py --actor_steps 300 --actor_learning_rate 1e-3

1. **Headroom** (:func:`digiq_trl.evaluation.best_of_n_headroom`, evaluation goals): how often the
   expert's action is the base actor's greedy one, among its N candidates, and the critic's pick.
2. **Oracle extraction** (:func:`digiq_trl.evaluation.oracle_best_of_n_targets`): the base actor
   plays train goals as when it collected the data; the actor stage's trainer (weighting ``sft``,
   the run's actor steps, learning rate and batch size) then imitates (a) the candidate a perfect
   critic picks, in the states that have a right one, and (b) the expert's action in every state.
   Both are scored like the run's methods. If (b) does not beat the base actor, no critic can
   make Best-of-N extraction beat it from such states.

Writes ``best_of_n_diagnosis.json`` to ``output_dir`` and prints it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import TrlParser

from digiq_trl.evaluation import best_of_n_headroom, oracle_best_of_n_targets
from digiq_trl.models.policy import VLMPolicy
from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig
from digiq_trl.trainers.actor_config import BestOfNActorConfig
from digiq_trl.trainers.actor_trainer import BestOfNActorTrainer


@dataclass
class DiagnosisArguments:
    """How much of each diagnosis to run."""

    headroom_episodes: int = field(
        default=60, metadata={"help": "Evaluation-goal episodes of the headroom count (every third state is sampled)."}
    )
    oracle_episodes: int = field(
        default=100,
        metadata={"help": "Train-goal episodes the base actor plays for the oracle's states "
                  "(100 give about as many states as the actor stage's default 800)."},
    )


def oracle_actor_score(pipe: DigiQPipeline, name: str, states: Dataset) -> dict[str, Any]:
    """Train the base actor on ``states`` (logged actions, weight 1) as the actor stage would, and
    score it; an empty set is reported, not trained."""
    cfg = pipe.config
    if len(states) == 0:
        return {"states": 0}
    args = BestOfNActorConfig(
        output_dir=str(cfg.path("diagnosis") / name), weighting="sft", max_steps=cfg.actor_steps,
        learning_rate=cfg.actor_learning_rate, per_device_train_batch_size=cfg.actor_batch_size,
        logging_steps=max(1, cfg.actor_steps // 10), save_strategy="no", report_to=[], seed=cfg.seed,
    )
    model, processor = pipe.load_base_actor()
    trainer = BestOfNActorTrainer(model, args=args, train_dataset=states, processing_class=processor)
    trainer.train()
    return {"states": len(states), **pipe.score(VLMPolicy(trainer.model.eval(), processor))}


def diagnose(pipe: DigiQPipeline, args: DiagnosisArguments) -> dict[str, Any]:
    """Headroom on evaluation goals, then base actor vs the two oracle-trained actors."""
    cfg = pipe.config
    model, processor = pipe.load_base_actor()
    greedy = VLMPolicy(model, processor)
    torch.manual_seed(cfg.seed)
    headroom = best_of_n_headroom(
        pipe.load_critic(), pipe.load_extractor(), cfg.suite, greedy, num_candidates=cfg.num_candidates,
        temperature=cfg.candidate_temperature, split=cfg.eval_split, num_episodes=args.headroom_episodes,
        seed=cfg.seed, layout=cfg.layout,
    )
    torch.manual_seed(cfg.seed)
    behavior = VLMPolicy(model, processor, temperature=cfg.behavior_temperature)
    targets = oracle_best_of_n_targets(
        behavior, cfg.suite, cfg.num_candidates, cfg.candidate_temperature,
        num_episodes=args.oracle_episodes, seed=cfg.seed, layout=cfg.layout,
    )
    actors = {"base": pipe.score(greedy)}
    actors.update({f"oracle_{name}": oracle_actor_score(pipe, name, states) for name, states in targets.items()})
    return {"eval_split": cfg.eval_split, "actor_steps": cfg.actor_steps,
            "actor_learning_rate": cfg.actor_learning_rate, "headroom": headroom, "actors": actors}


def main() -> None:
    """Parse the run's configuration plus :class:`DiagnosisArguments`, diagnose, write the JSON."""
    config, args = TrlParser((DigiQPipelineConfig, DiagnosisArguments)).parse_args_and_config()
    if config.evaluation != "simulator":
        raise SystemExit("diagnose_best_of_n.py needs the simulator (its expert stands in for a perfect critic); "
                         f"this configuration has evaluation={config.evaluation!r}")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    result = diagnose(DigiQPipeline(config), args)
    path = Path(config.output_dir) / "best_of_n_diagnosis.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
