"""The ``digiq-trl`` command line: one subcommand per task (convert, collect, view, ...).

Each subcommand lives next to the code it drives, in a module with a ``register(subparsers)``
function that adds its parser and sets ``func`` to the callable that runs it.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Sequence

SUBCOMMAND_MODULES = (
    "digiq_trl.data.convert_cli",
    "digiq_trl.envs.collect_cli",
    "digiq_trl.viewer_cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="digiq-trl", description="Digi-Q tools: convert, collect and view transition datasets."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``digiq-trl`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
