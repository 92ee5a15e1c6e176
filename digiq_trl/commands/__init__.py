"""The script commands of ``digiq-trl``: train, diagnose, train-base-actor, train-representation.

Each module is one command, parsed with :class:`trl.TrlParser` (every dataclass field is a flag and
a ``--config`` YAML key) and run by ``main(argv=None, prog=None)``. The same ``main`` backs the
console script (``digiq-trl <command> ...``, see :mod:`digiq_trl.cli`) and the thin wrapper in
``examples/`` (``accelerate launch examples/<script>.py ...``). Modules import torch and the model
code only after parsing, so ``--help`` answers in well under a second; ``train-representation`` is
the exception, since its ``RepresentationConfig`` is a ``transformers.TrainingArguments``.
"""

from collections.abc import Sequence
from typing import Any


def parse_options(parser: Any, argv: Sequence[str] | None) -> tuple[Any, ...]:
    """``parser.parse_args_and_config(argv)``, where a bad flag or an invalid option (a ``ValueError``
    of a config's ``__post_init__``) ends the command in one line and exit status 2 (argparse alone
    would print the usage of every flag first)."""

    def one_line_error(message: str) -> None:
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = one_line_error
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as error:
        one_line_error(str(error))
