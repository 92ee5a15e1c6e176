"""Is the critic or the actor what limits Best-of-N? Diagnose a finished simulator run.

A thin wrapper of ``digiq-trl diagnose`` (:mod:`digiq_trl.commands.diagnose`, which explains the
headroom count and the oracle actors). Point it at the ``output_dir`` of ``examples/train.py`` with
the same flags or ``--config``:

    python examples/diagnose_best_of_n.py                     # the embedded default's run
    python examples/diagnose_best_of_n.py --config examples/configs/simulator_webshop.yaml

Writes ``best_of_n_diagnosis.json`` to ``output_dir`` and prints it.
"""

from digiq_trl.commands.diagnose import main


if __name__ == "__main__":
    main()
