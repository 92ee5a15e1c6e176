"""``digiq-trl diagnose``: is the critic or the actor what limits Best-of-N? Diagnose a finished
simulator run.

Point it at the ``output_dir`` of ``digiq-trl train`` (``examples/train.py``) with the same flags
or ``--config`` (it reads the run's base actor, critic, feature backbone, data and the Digi-Q
actor's preparation). It needs the simulator, whose scripted expert plays the part of a perfect
critic::

    digiq-trl diagnose                                        # the embedded default's run
    digiq-trl diagnose --config examples/configs/simulator_webshop.yaml
    python examples/diagnose_best_of_n.py --config examples/configs/simulator_webshop.yaml

1. **Headroom** (:func:`digiq_trl.diagnostics.best_of_n_headroom`, evaluation goals): how often the
   expert's action is the base actor's greedy one, among its N candidates, and the critic's pick.
2. **Oracle extraction** (:func:`digiq_trl.diagnostics.oracle_targets`): the expert's action in
   every training state of the actor stage is recovered by replaying its episode
   (:func:`digiq_trl.envs.collect.replay_infos`). The actor stage's own trainer, data,
   candidates, anchor and settings then train the base actor on (a) the candidate a perfect critic
   picks, where one is right, and (b) the expert's action in every state. Both are scored like the
   run's methods. If (b) does not beat the base actor, no critic can make Best-of-N extraction
   beat it from these states; if (a) does and Digi-Q does not, the critic is the bottleneck.

Writes ``best_of_n_diagnosis.json`` to ``output_dir`` and prints it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trl import TrlParser

from ..pipeline_config import DigiQPipelineConfig
from . import parse_options


if TYPE_CHECKING:
    from ..pipeline import DigiQPipeline

DESCRIPTION = ("Is the critic or the actor what limits Best-of-N? Diagnoses a finished simulator run (same flags "
               "or --config as `digiq-trl train`): headroom of the N candidates, then actors trained on a "
               "perfect critic's choices. Writes best_of_n_diagnosis.json to output_dir.")


@dataclass
class DiagnosisArguments:
    """How much of each diagnosis to run."""

    headroom_episodes: int = field(
        default=60, metadata={"help": "Evaluation-goal episodes of the headroom count (every third state is sampled)."}
    )
    ranking_episodes: int = field(
        default=100, metadata={"help": "Episodes per goal split (evaluation and heldout) of the typed-query ranking; 0 skips it."}
    )
    headroom_split: str | None = field(
        default=None, metadata={"help": "Goal split of the headroom count (default: the run's eval_split)."}
    )
    oracles: list[str] = field(
        default_factory=lambda: ["best_of_n", "expert"],
        metadata={"help": "Oracle actors to train and score: best_of_n, expert."},
    )


def oracle_scores(pipe: DigiQPipeline, names: list[str]) -> dict[str, Any]:
    """Train the base actor on each oracle relabeling of the actor stage's states and score it."""
    from datasets import load_from_disk

    from ..diagnostics import RELABELED_COLUMN, oracle_targets
    from ..envs.collect import replay_infos
    from ..models.policy import VLMPolicy
    from ..run_scoring import score_policy

    cfg = pipe.config
    seed = cfg.actor_seeds[0]
    preparation = load_from_disk(str(pipe.artifacts.preparation_path("digiq", seed)))
    states = pipe.actor_states(seed)
    targets = oracle_targets(states, preparation["candidates"], replay_infos(states, **cfg.env_kwargs))
    scores: dict[str, Any] = {}
    for name in names:
        out = cfg.path("diagnosis") / name
        pipe.train_actor("filtered_bc", targets[name], out, seed)
        policy = VLMPolicy(*pipe.artifacts.load_actor(out))
        relabeled = float(sum(targets[name][RELABELED_COLUMN]))  # a float, as the diagnosis has always written it
        scores[f"oracle_{name}"] = {"states_relabeled": relabeled, "states": len(states),
                                    **score_policy(cfg, pipe.artifacts, policy)}
    return scores


def diagnose(pipe: DigiQPipeline, args: DiagnosisArguments) -> dict[str, Any]:
    """Headroom on evaluation goals, then base actor vs the oracle-trained actors."""
    import torch

    from ..diagnostics import best_of_n_headroom, typed_query_ranking
    from ..models.policy import VLMPolicy
    from ..run_scoring import score_policy

    cfg = pipe.config
    greedy = VLMPolicy(*pipe.artifacts.load_actor())
    scorer = pipe.artifacts.scorer()
    torch.manual_seed(cfg.seed)
    headroom = best_of_n_headroom(
        scorer, cfg.suite, greedy, num_candidates=cfg.num_candidates,
        temperature=cfg.candidate_temperature, split=args.headroom_split or cfg.eval_split,
        num_episodes=args.headroom_episodes, seed=cfg.seed, **cfg.env_kwargs,
    )
    splits = dict.fromkeys([cfg.eval_split, "heldout"]) if args.ranking_episodes else {}
    ranking = {split: typed_query_ranking(scorer, cfg.suite, greedy, num_candidates=cfg.num_candidates,
                                          temperature=cfg.candidate_temperature, split=split,
                                          num_episodes=args.ranking_episodes, seed=cfg.seed, **cfg.env_kwargs)
               for split in splits}
    actors = {"base": score_policy(cfg, pipe.artifacts, greedy), **oracle_scores(pipe, args.oracles)}
    return {"eval_split": cfg.eval_split, "headroom_split": args.headroom_split or cfg.eval_split,
            **cfg.phone_settings, "actor_steps": cfg.actor_steps, "anchor": cfg.anchor,
            "actor_learning_rate": cfg.actor_learning_rate, "headroom": headroom, "typed_query_ranking": ranking,
            "actors": actors}


def make_parser(prog: str | None = None) -> TrlParser:
    """The command's parser: the run's :class:`DigiQPipelineConfig` plus :class:`DiagnosisArguments`."""
    return TrlParser((DigiQPipelineConfig, DiagnosisArguments), prog=prog, description=DESCRIPTION)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    """Parse the run's configuration and :class:`DiagnosisArguments`, diagnose, write and print the JSON."""
    config, args = parse_options(make_parser(prog), argv)
    if config.evaluation != "simulator":
        raise SystemExit("diagnose needs the simulator (its expert stands in for a perfect critic); "
                         f"this configuration has evaluation={config.evaluation!r}")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from ..pipeline import DigiQPipeline

    result = diagnose(DigiQPipeline(config), args)
    path = Path(config.output_dir) / "best_of_n_diagnosis.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result
