"""``digiq-trl view``: write a self-contained HTML page to browse trajectories, values and candidates.

From a pipeline run folder (its data splits, critic values and Best-of-N candidates)::

    digiq-trl view outputs/digiq-default                 # writes outputs/digiq-default/viewer.html

From any transitions dataset, with a critic's values if one is given::

    digiq-trl view --dataset data/general-noisy --critic outputs/digiq-default/critic --output noisy.html

Open the page in a browser (no server, no network): arrow keys move between steps (left, right)
and episodes (up, down); the header filters by split, outcome, task kind and goal text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``view`` options to ``parser`` (made by :func:`digiq_trl.cli.add_tool_parser`)."""
    parser.add_argument("run_dir", nargs="?", help="output_dir of a pipeline run (examples/train.py)")
    parser.add_argument("--dataset", help="instead of a run: a transitions dataset folder or Hub id")
    parser.add_argument("--critic", help="with --dataset: a critic folder whose V(s) and Q(s, a) to show")
    parser.add_argument("--backbone", help="with --critic: the critic's feature backbone, when the path its "
                        "config records has moved")
    parser.add_argument("--preparation", help="an actor preparation folder with Best-of-N candidates "
                        "(default for a run: actor/digiq/seed<lowest>/preparation)")
    parser.add_argument("--max-episodes", type=int, help="show only the first N episodes of each split")
    parser.add_argument("--output", help="HTML file to write (default: RUN_DIR/viewer.html, or viewer.html "
                        "with --dataset)")


def run(args: argparse.Namespace) -> int:
    """Write the page, print a one-line JSON summary (path and size)."""
    from ..data.validation import TransitionValidationError
    from .writer import write_dataset_viewer, write_viewer

    if (args.run_dir is None) == (args.dataset is None):
        args.parser.error("give either RUN_DIR or --dataset")
    if args.run_dir is not None and (args.critic or args.backbone):
        args.parser.error("--critic and --backbone go with --dataset; a run folder has its own critic")
    if args.backbone and not args.critic:
        args.parser.error("--backbone needs --critic")
    if args.max_episodes is not None and args.max_episodes < 1:
        args.parser.error("--max-episodes must be at least 1")
    try:
        if args.run_dir is not None:
            path = write_viewer(args.run_dir, args.output, preparation=args.preparation, max_episodes=args.max_episodes)
        else:
            path = write_dataset_viewer(
                args.dataset, args.output or "viewer.html", critic=args.critic, backbone=args.backbone,
                preparation=args.preparation, max_episodes=args.max_episodes,
            )
    except TransitionValidationError as error:  # names the dataset, row and field
        args.parser.exit(1, f"{args.parser.prog}: error: {error}\n")
    print(json.dumps({"output": str(path), "megabytes": round(Path(path).stat().st_size / 2**20, 2)}))
    return 0
