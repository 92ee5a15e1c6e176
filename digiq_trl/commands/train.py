"""``digiq-trl train``: run the whole Digi-Q method (base actor, data, representation, features,
critic, actor, evaluation).

With no arguments it runs the embedded default, fully offline on CPU: a tiny VLM behavior-cloned in
the simulated phone, its own offline data, all four Digi-Q stages and the evaluation of base actor,
filtered BC and Digi-Q on the published test goals. Results go to ``--output_dir`` (``results.json``,
``report.md``, plots, the critic and the actor adapters). Every field of
:class:`~digiq_trl.pipeline_config.DigiQPipelineConfig` is a flag and a ``--config`` YAML key::

    digiq-trl train
    digiq-trl train --config examples/configs/simulator_webshop.yaml
    accelerate launch examples/train.py
    accelerate launch --num_processes 2 --cpu examples/train.py --output_dir outputs/ddp
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import TrlParser

from ..pipeline_config import DigiQPipelineConfig
from . import parse_options


DESCRIPTION = ("Run the whole Digi-Q method: base actor, data, representation, features, critic, actor, evaluation. "
               "With no arguments: the embedded default (simulated phone, tiny VLM, offline, CPU).")


@dataclass
class TrainArguments:
    """Options of the command itself (not of the run)."""

    dry_run: bool = field(
        default=False,
        metadata={"help": "Load nothing heavy and train nothing: check the options, the data and the Hub prefix, and "
                  "print each stage's steps, batch and estimated peak GPU memory (docs/real-data-gpu.md)."},
    )


def make_parser(prog: str | None = None) -> TrlParser:
    """The command's parser: every :class:`DigiQPipelineConfig` field, ``--dry_run`` and ``--config``."""
    return TrlParser((DigiQPipelineConfig, TrainArguments), prog=prog, description=DESCRIPTION)


def summary(results: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The one-line result of a run: each method's score in the run's metric (``results["metric"]``:
    ``success_rate`` in the simulator, ``successful_episode_action_match`` offline), keyed by that metric."""
    metric = results["metric"]
    return {"output_dir": output_dir, metric: {name: round(row[metric], 3) for name, row in results["methods"].items()}}


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    """Parse flags and ``--config`` YAML into a :class:`DigiQPipelineConfig`, run it, print the summary."""
    config, command = parse_options(make_parser(prog), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if command.dry_run:
        return _dry_run(config, prog)
    from ..artifacts import DamagedArtifactError, MissingArtifactError
    from ..pipeline import DigiQPipeline
    from ..pipeline_checks import InvalidOptionError
    from ..run_lock import RunInProgressError

    name = prog or "digiq-trl train"
    try:
        results = DigiQPipeline(config).run()
    except InvalidOptionError as error:  # a Hub id that cannot be read, found before any work
        sys.stderr.write(f"{name}: error: {error}\n")
        raise SystemExit(2) from None
    except (DamagedArtifactError, MissingArtifactError, RunInProgressError) as error:  # names the file or PID, and what to do
        raise SystemExit(f"{name}: error: {error}") from None
    except OSError as error:
        where = error.filename or config.output_dir
        if error.errno == errno.ENOSPC:
            raise SystemExit(f"{name}: error: no space left on device while writing {where}; free space and rerun the "
                             "same command: finished stages are reused and the critic resumes from its last complete "
                             "checkpoint") from None
        if error.errno in (errno.EACCES, errno.EROFS):
            raise SystemExit(f"{name}: error: {where}: not writable ({error.strerror}); choose another --output_dir "
                             "or make it writable") from None
        raise
    if "methods" in results:
        print(json.dumps(summary(results, config.output_dir)))
    return results


def _dry_run(config: DigiQPipelineConfig, prog: str | None) -> dict[str, Any]:
    """``--dry_run``: the checks and estimates of :func:`digiq_trl.dry_run.dry_run`; exit status 2
    when a check failed."""
    from ..dry_run import dry_run

    result = dry_run(config)
    if result["problems"]:
        raise SystemExit(2)
    return result
