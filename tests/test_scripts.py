"""Every script and ``digiq-trl`` subcommand a user runs answers ``--help`` (argparse %-formats help
strings, and a bare "%" in one crashed ``examples/train.py --help`` once)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digiq_trl.cli import SUBCOMMANDS, main


REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "examples").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_help_exits_zero(script: Path) -> None:
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", [sub.name for sub in SUBCOMMANDS])
def test_digiq_trl_subcommand_help_exits_zero(command: str) -> None:
    run = subprocess.run([sys.executable, "-m", "digiq_trl.cli", command, "--help"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"usage: digiq-trl {command} " in run.stdout


def test_digiq_trl_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert f"    {sub.name}" in listing
