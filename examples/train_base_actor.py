"""Behavior-clone a tiny VLM base actor in the simulated phone, and measure it.

A thin wrapper of ``digiq-trl train-base-actor`` (:mod:`digiq_trl.commands.train_base_actor`).
``examples/configs/base_actor.yaml`` holds the settings the embedded default pipeline uses for its
base actor.

    python examples/train_base_actor.py --output_dir outputs/base-actor
    python examples/train_base_actor.py --config examples/configs/base_actor.yaml
"""

from digiq_trl.commands.train_base_actor import main


if __name__ == "__main__":
    main()
