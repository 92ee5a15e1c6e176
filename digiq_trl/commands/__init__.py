"""The script commands of ``digiq-trl``: train, diagnose, train-base-actor, train-representation.

Each module is one command, parsed with :class:`trl.TrlParser` (every dataclass field is a flag and
a ``--config`` YAML key) and run by ``main(argv=None, prog=None)``. The same ``main`` backs the
console script (``digiq-trl <command> ...``, see :mod:`digiq_trl.cli`) and the thin wrapper in
``examples/`` (``accelerate launch examples/<script>.py ...``). Modules import torch and the model
code only after parsing, so ``--help`` answers in well under a second; ``train-representation`` is
the exception, since its ``RepresentationConfig`` is a ``transformers.TrainingArguments``.
"""
