"""Behavior-clone a tiny VLM base actor in the simulated phone, and measure it.

A thin wrapper of ``digiq-trl train-base-actor`` (:mod:`digiq_trl.commands.train_base_actor`).
``examples/configs/phone_actor_tiny.yaml`` is the recipe of the base actor shipped with digiq-trl
(``digiq-trl/phone-actor-tiny``), the embedded default pipeline's base actor.

    python examples/train_base_actor.py --output_dir outputs/base-actor
    python examples/train_base_actor.py --config examples/configs/phone_actor_tiny.yaml
"""

from digiq_trl.commands.train_base_actor import main


if __name__ == "__main__":
    main()
