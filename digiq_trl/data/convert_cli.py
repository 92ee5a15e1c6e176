"""``digiq-trl convert``: reference ``.pt`` files or AitW TFRecord shards -> a transitions dataset.

The dataset is written with ``save_to_disk`` into a temporary folder beside ``--output`` and renamed
into place only once it is complete and validated, so a failed conversion never loses an existing
output. A dataset card (README.md: schema, sources, citations) is written with it. A bad input or an
unwritable output ends in one line naming the file, record or row, and field, and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datasets import Dataset, load_from_disk

from ..discount import DEFAULT_GAMMA
from ..staging import check_replaceable_dataset, staged_output
from .aitw_tfrecord import convert_aitw_tfrecord
from .conversion import ConversionError, save_transitions
from .dataset_card import card_text
from .digiq_pt import convert_digiq_pt
from .hub import HubPushError, push_transitions
from .validation import TransitionValidationError


FORMATS = ("digiq-pt", "aitw-tfrecord")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``convert`` options to ``parser`` (made by :func:`digiq_trl.cli.add_tool_parser`)."""
    parser.add_argument("--format", required=True, choices=FORMATS, help="input format")
    parser.add_argument("--input", required=True, nargs="+", help="input files")
    parser.add_argument("--images", help="folder of the screenshots named by image_path (digiq-pt)")
    parser.add_argument(
        "--output", required=True, help="folder to write the dataset to (save_to_disk)"
    )
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="discount of mc_return")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also push to this Hub dataset repo")


def _convert(args: argparse.Namespace, cache_dir: Path) -> Dataset:
    if args.format == "digiq-pt":
        return convert_digiq_pt(
            args.input, images_dir=args.images, gamma=args.gamma, cache_dir=cache_dir
        )
    if args.images:
        raise ConversionError(
            "--images applies to --format digiq-pt only (AitW records hold the pixels)"
        )
    return convert_aitw_tfrecord(args.input, gamma=args.gamma, cache_dir=cache_dir)


def _description(args: argparse.Namespace) -> str:
    names = ", ".join(f"`{Path(p).name}`" for p in args.input)
    command = f"digiq-trl convert --format {args.format}"
    return f"Converted by `{command}` from {names} (gamma={args.gamma})."


def write_dataset(args: argparse.Namespace) -> Path:
    """Convert, save beside ``--output`` with a card, move into place; return the output path."""
    output = Path(args.output).resolve()
    check_replaceable_dataset(output)
    with staged_output(output) as stage:
        ds = _convert(args, stage.parent / "cache")
        save_transitions(ds, stage)
        (stage / "README.md").write_text(card_text(ds, _description(args)))
        count = len(ds)
        del ds
    print(f"wrote {count} transitions to {output}", file=sys.stderr)
    return output


def _error_line(error: Exception) -> str:
    """One line for ``error``; an ``OSError`` as ``<file>: <reason>``."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split())


def run(args: argparse.Namespace) -> int:
    """Run ``convert``; errors are printed as one clear line and give exit status 1."""
    try:
        output = write_dataset(args)
    except (ConversionError, TransitionValidationError, OSError) as error:
        print(f"digiq-trl convert: error: {_error_line(error)}", file=sys.stderr)
        return 1
    if args.push_to_hub:
        try:
            url = push_transitions(
                load_from_disk(str(output)), args.push_to_hub, description=_description(args)
            )
        except HubPushError as error:
            print(f"digiq-trl convert: error: {error} (at {output})", file=sys.stderr)
            return 1
        print(f"pushed to {url}", file=sys.stderr)
    return 0
