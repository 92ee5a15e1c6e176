"""Run the whole Digi-Q method: base actor, data, representation, features, critic, actor, evaluation.

A thin wrapper of ``digiq-trl train`` (:mod:`digiq_trl.commands.train`), kept so that
``accelerate launch`` can start it. With no arguments it runs the embedded default, fully offline on
CPU; results go to ``--output_dir`` (``results.json``, ``report.md``, plots, the critic and the actor
adapters).

    accelerate launch examples/train.py
    accelerate launch examples/train.py --config examples/configs/simulator_webshop.yaml
    accelerate launch --num_processes 2 --cpu examples/train.py --output_dir outputs/ddp
    python examples/train.py --help
"""

from digiq_trl.commands.train import main


if __name__ == "__main__":
    main()
