"""Run the whole Digi-Q method: base actor, data, representation, features, critic, actor, evaluation.

With no arguments it runs the embedded default, fully offline on CPU: a tiny VLM behavior-cloned in
the simulated phone, its own offline data, all four Digi-Q stages and the evaluation of base actor,
filtered BC and Digi-Q on held-out goals. Results go to ``--output_dir`` (``results.json``,
``report.md``, plots, the critic and the actor adapters).

    accelerate launch examples/train.py
    accelerate launch examples/train.py --config examples/configs/simulator_webshop.yaml
    accelerate launch --num_processes 2 --cpu examples/train.py --output_dir outputs/ddp
    python examples/train.py --help
"""

from __future__ import annotations

import json
import logging

from trl import TrlParser

from digiq_trl.pipeline import DigiQPipeline, DigiQPipelineConfig


def main() -> None:
    """Parse flags and ``--config`` YAML into a :class:`DigiQPipelineConfig` and run it."""
    (config,) = TrlParser(DigiQPipelineConfig).parse_args_and_config()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    results = DigiQPipeline(config).run()
    if "methods" in results:
        table = {name: round(row["success_rate"], 3) for name, row in results["methods"].items()}
        print(json.dumps({"output_dir": config.output_dir, "success_rate": table}))


if __name__ == "__main__":
    main()
