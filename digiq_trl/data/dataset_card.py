"""The dataset card (``README.md``) written with every transitions dataset saved or pushed.

The schema table is taken from :mod:`digiq_trl.data.schema`'s docstring, so the card, the README and
the code describe the same columns.
"""

from __future__ import annotations

import re

from datasets import Dataset, DatasetDict

from ..citation import DIGIQ_CITATION
from . import schema


CITATIONS = f"""\
- **Android in the Wild** (AitW): Rawles et al., "Android in the Wild: A Large-Scale Dataset for
  Android Device Control", NeurIPS 2023 Datasets and Benchmarks. Google Research, CC BY 4.0.
- **DigiRL task sets and screenshots**: Bai et al., "DigiRL: Training In-The-Wild Device-Control
  Agents with Autonomous Reinforcement Learning", NeurIPS 2024 (github.com/DigiRL-agent/digirl,
  Apache-2.0).
- **Digi-Q**: Bai, Zhou, Li, Levine, Kumar, "Digi-Q: Learning Q-Value Functions for Training
  Device-Control Agents", ICLR 2025, arXiv:2502.15760.

```bibtex
{DIGIQ_CITATION}
```
"""


def schema_table() -> str:
    """The column table of :mod:`digiq_trl.data.schema`'s docstring, in plain Markdown."""
    lines = [line for line in (schema.__doc__ or "").splitlines() if line.startswith("|")]
    table = "\n".join(lines)
    table = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", table)
    return table.replace("``", "`")


def _summary(ds: Dataset) -> str:
    episodes = len(set(ds.select_columns(["episode_id"])["episode_id"])) if len(ds) else 0
    optional = [name for name in ("candidate_actions", "ui_boxes") if name in ds.column_names]
    listed = ", ".join(f"`{name}`" for name in optional) or "none"
    return f"{len(ds)} transitions in {episodes} episodes (optional columns: {listed})"


def card_text(ds: Dataset | DatasetDict, description: str = "") -> str:
    """The Markdown body of the card for ``ds``: sizes, schema table, sources and citations."""
    if isinstance(ds, DatasetDict):
        sizes = "\n".join(f"- `{name}`: {_summary(split)}." for name, split in ds.items())
    else:
        sizes = f"{_summary(ds)}."
    intro = f"{description.strip()}\n\n" if description.strip() else ""
    return (
        "# Device-control transitions (digiq-trl schema)\n\n"
        f"{intro}{sizes}\n\n"
        "Load it with `digiq_trl.data.hub.load_transitions(...)`, which validates the schema, or "
        "with `datasets.load_dataset(...)`.\n\n"
        "## Schema\n\nOne row per step of an agent trajectory, sorted by episode and step.\n\n"
        f"{schema_table()}\n\n"
        'Actions are AutoUI action strings, e.g. `Action Decision: "action_type": "DUAL_POINT", '
        '"touch_point": "[0.52, 0.31]", "lift_point": "[0.52, 0.31]", "typed_text": ""` '
        "(points are normalized `[y, x]`; `[-1.0, -1.0]` when unused).\n\n"
        f"## Sources and citations\n\n{CITATIONS}"
    )
