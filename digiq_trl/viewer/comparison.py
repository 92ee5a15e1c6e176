"""The evaluation episodes of every method side by side: one row per (evaluation seed, episode),
which is the same goal and phone for every method, so a reader sees what Digi-Q changed.

Each cell shows the method's outcome (success, or the failure mode the simulator named) and, on
click, the actions it took. The page filters rows by method and failure mode, and to the rows
where the methods' outcomes differ. It is one self-contained HTML file with no external assets.

Example:
    >>> write_comparison(json.load(open("outputs/digiq-default/results.json")), "evaluation.html")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..envs.failures import FAILURE_MODES


METHOD_NAMES = {"base": "base actor", "filtered_bc": "filtered BC", "digiq": "Digi-Q"}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left; }}
td.ok {{ background: #e6f4ea; }} td.fail {{ background: #fce8e6; }}
details summary {{ cursor: pointer; }} ol {{ margin: 2px 0 0 1.2em; padding: 0; }}
.controls label {{ margin-right: 1.5em; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<div class="controls">
<label>method <select id="method"><option value="">any</option>{method_options}</select></label>
<label>outcome <select id="outcome"><option value="">any</option><option value="success">success</option>{mode_options}</select></label>
<label><input type="checkbox" id="differ"> only where the methods differ</label>
<span id="count"></span>
</div>
<table id="episodes"><thead><tr><th>seed</th><th>#</th><th>goal</th><th>interruption</th>{method_headers}</tr></thead>
<tbody>{rows}</tbody></table>
<script>
const methods = {methods_json};
function apply() {{
  const method = document.getElementById("method").value;
  const outcome = document.getElementById("outcome").value;
  const differ = document.getElementById("differ").checked;
  let shown = 0;
  for (const row of document.querySelectorAll("#episodes tbody tr")) {{
    const outcomes = methods.map(m => row.dataset[m]);
    const picked = method ? [row.dataset[method]] : outcomes;
    const visible = (!outcome || picked.includes(outcome)) && (!differ || new Set(outcomes).size > 1);
    row.hidden = !visible; shown += visible;
  }}
  document.getElementById("count").textContent = shown + " of " + document.querySelectorAll("#episodes tbody tr").length + " episodes";
}}
for (const id of ["method", "outcome", "differ"]) document.getElementById(id).addEventListener("change", apply);
apply();
</script></body></html>
"""


def comparison_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (evaluation seed, episode index): the goal, whether an interruption was shown
    (in any method's episode) and each method's record.

    Raises:
        ValueError: the results hold no per-episode records (an offline evaluation), or the methods
            played different numbers of episodes for a seed.
    """
    methods = {name: row["episodes"] for name, row in results["methods"].items() if row.get("episodes")}
    if not methods:
        raise ValueError("the results hold no evaluation episodes (an offline evaluation has none)")
    rows = []
    seeds = next(iter(methods.values())).keys()
    for seed in seeds:
        lengths = {name: len(episodes[seed]) for name, episodes in methods.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"evaluation seed {seed}: the methods played different numbers of episodes {lengths}")
        for index in range(next(iter(lengths.values()))):
            records = {name: episodes[seed][index] for name, episodes in methods.items()}
            goals = {record["goal"] for record in records.values()}
            if len(goals) != 1:
                raise ValueError(f"evaluation seed {seed}, episode {index}: different goals {sorted(goals)}")
            rows.append({"seed": seed, "index": index, "goal": goals.pop(),
                         "interruption": any(r.get("interruption") for r in records.values()), "methods": records})
    return rows


def _outcome(record: Mapping[str, Any]) -> str:
    return "success" if record["success"] else record.get("failure_mode") or "failed"


def _cell(record: Mapping[str, Any]) -> str:
    actions = "".join(f"<li>{html.escape(a)}</li>" for a in record.get("actions", []))
    outcome = html.escape(_outcome(record))
    css = "ok" if record["success"] else "fail"
    return f'<td class="{css}"><details><summary>{outcome}</summary><ol>{actions}</ol></details></td>'


def write_comparison(results: Mapping[str, Any], path: str | Path, title: str = "Evaluation episodes") -> Path:
    """Write the side-by-side page of ``results`` (a pipeline's ``results.json``) to ``path``."""
    rows = comparison_rows(results)
    names = list(rows[0]["methods"])
    body = []
    for row in rows:
        outcomes = " ".join(f'data-{name}="{html.escape(_outcome(row["methods"][name]))}"' for name in names)
        cells = "".join(_cell(row["methods"][name]) for name in names)
        body.append(f'<tr {outcomes}><td>{row["seed"]}</td><td>{row["index"]}</td><td>{html.escape(row["goal"])}</td>'
                    f'<td>{"yes" if row["interruption"] else ""}</td>{cells}</tr>')
    rates = ", ".join(f"{METHOD_NAMES.get(n, n)} {results['methods'][n]['success_rate']:.1%}" for n in names)
    page = _PAGE.format(
        title=html.escape(title),
        summary=html.escape(f"{len(rows)} episodes per method (goal split {results.get('eval_split', '?')}, "
                            f"phone {results.get('eval_phone', '?')}): {rates}."),
        method_options="".join(f'<option value="{n}">{html.escape(METHOD_NAMES.get(n, n))}</option>' for n in names),
        mode_options="".join(f'<option value="{html.escape(m)}">{html.escape(m)}</option>' for m in FAILURE_MODES),
        method_headers="".join(f"<th>{html.escape(METHOD_NAMES.get(n, n))}</th>" for n in names),
        rows="\n".join(body), methods_json=json.dumps(names),
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
