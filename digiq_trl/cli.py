"""The ``digiq-trl`` command line: one subcommand per task (train, diagnose, convert, collect, ...).

Two kinds of subcommands, both listed in :data:`SUBCOMMANDS`:

- **scripts** (``train``, ``diagnose``, ``train-base-actor``, ``train-representation``): modules of
  :mod:`digiq_trl.commands` whose ``main(argv, prog)`` parses everything after the command name
  with :class:`trl.TrlParser` (dataclass flags and ``--config`` YAML), exactly as the matching
  ``examples/`` script does;
- **tools** (``convert``, ``collect``, ``evaluate``, ``view``): modules that live next to the code they drive, with
  an ``add_arguments(parser)`` function that adds the command's options and a ``run(args)`` function that runs
  it; :func:`add_tool_parser` makes the argparse parser (help from :data:`SUBCOMMANDS`, description from the
  module's docstring).

Only the module of the command being run is imported, so ``digiq-trl --help`` does not load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass


PROG = "digiq-trl"


@dataclass(frozen=True)
class Subcommand:
    """A ``digiq-trl`` subcommand: its name, the module that implements it, and its one-line help."""

    name: str
    module: str
    help: str
    script: bool = False
    """True: the module's ``main(argv, prog)`` parses the arguments (TrlParser); False: :func:`add_tool_parser`."""


SUBCOMMANDS = (
    Subcommand("train", "digiq_trl.commands.train", "run the whole Digi-Q pipeline (examples/train.py)", script=True),
    Subcommand("diagnose", "digiq_trl.commands.diagnose",
               "diagnose whether the critic or the actor limits Best-of-N on a finished simulator run", script=True),
    Subcommand("train-base-actor", "digiq_trl.commands.train_base_actor",
               "behavior-clone and measure a tiny base actor in the simulated phone", script=True),
    Subcommand("train-representation", "digiq_trl.commands.train_representation",
               "stage 1: fine-tune a VLM on the actionability task", script=True),
    Subcommand("convert", "digiq_trl.data.convert_cli",
               "convert reference .pt files or AitW TFRecords into a transitions dataset"),
    Subcommand("collect", "digiq_trl.envs.collect_cli",
               "collect a transitions dataset in the simulated phone or on Android devices"),
    Subcommand("evaluate", "digiq_trl.evaluate_cli",
               "evaluate an actor in the simulated phone or on Android devices"),
    Subcommand("view", "digiq_trl.viewer.view_cli",
               "write an HTML page to browse episodes, critic values and Best-of-N candidates"),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported, the others are listed by name."""
    parser = argparse.ArgumentParser(prog=PROG, description="Digi-Q: train, diagnose, evaluate, and convert, "
                                     "collect and view transition datasets. `digiq-trl <command> --help` for a command's options.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for sub in SUBCOMMANDS:
        if sub.name == command and not sub.script:
            add_tool_parser(subparsers, sub)
        else:
            subparsers.add_parser(sub.name, help=sub.help, add_help=False)
    return parser


def add_tool_parser(subparsers: argparse._SubParsersAction, sub: Subcommand) -> argparse.ArgumentParser:
    """Add the parser of the tool ``sub``: its module's docstring as the description, its
    ``add_arguments`` options, and its ``run`` as ``func``; the parser itself is ``args.parser``, so
    ``run`` can report a usage error the argparse way."""
    module = importlib.import_module(sub.module)
    parser = subparsers.add_parser(sub.name, help=sub.help, description=module.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(func=module.run, parser=parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``digiq-trl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((sub for sub in SUBCOMMANDS if argv and argv[0] == sub.name), None)
    if command is not None and command.script:
        importlib.import_module(command.module).main(argv[1:], prog=f"{PROG} {command.name}")
        return 0
    args = build_parser(command.name if command else None).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
