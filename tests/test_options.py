"""Every option of a run is checked before any work: one line naming the option, nothing written."""

import re
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from digiq_trl.commands.train import main
from digiq_trl.pipeline_checks import OPTION_RANGES, InvalidOptionError, Range
from digiq_trl.pipeline_config import DigiQPipelineConfig


REPO = Path(__file__).resolve().parents[1]
NUMERIC = [f.name for f in fields(DigiQPipelineConfig)
           if any(t in str(f.type) for t in ("int", "float")) and "list" not in str(f.type)]


def _outside(allowed: Range) -> float:
    """A value just outside ``allowed``."""
    if allowed.nonzero:
        return 0
    if allowed.low is not None:
        return allowed.low if allowed.low_open else allowed.low - 1
    if allowed.high is not None:
        return allowed.high + 1
    return float("nan")


ISSUE_ROWS = [("critic_steps", "-1"), ("representation_steps", "-1"), ("actor_steps", "-1"), ("num_candidates", "0"),
              ("eval_episodes", "0"), ("advantage_threshold", "nan"), ("bc_steps", "-1"), ("eval_seeds", ""),
              ("actor_seeds", "0 0"), ("actor_token_probability_clamp", "0.9 0.1"), ("min_candidate_count", "9"),
              ("dataset", "does/not/exist"), ("dataset", "someone/missing-data"), ("dataset", "README.md"), ("dataset", "./missing"),
              ("base_actor", "/no/such/model"), ("test_size", "1"), ("anchor", "best"), ("suite", "shop")]


def test_every_numeric_option_has_a_range() -> None:
    assert sorted(NUMERIC) == sorted(OPTION_RANGES)


def _refused(tmp_path, capsys, name: str, value: str) -> str:
    """Run ``digiq-trl train --name value`` in process; assert it ends at once with one line naming
    the option and writes nothing; return that line."""
    out = tmp_path / "run"
    argv = ["--output_dir", str(out), f"--{name}", *value.split()] if value else ["--output_dir", str(out), f"--{name}"]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        main(argv, prog="digiq-trl train")
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and elapsed < 10
    assert "Traceback" not in err and len(err.splitlines()) == 1 and f"--{name}" in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("name", sorted(OPTION_RANGES))
def test_an_out_of_range_numeric_option_ends_in_one_line_before_any_work(tmp_path, capsys, name) -> None:
    value = _outside(OPTION_RANGES[name])
    err = _refused(tmp_path, capsys, name, str(value))
    assert "allowed:" in err


@pytest.mark.parametrize(("name", "value"), ISSUE_ROWS)
def test_the_mistyped_options_of_the_issue_end_in_one_line(tmp_path, capsys, name, value, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    _refused(tmp_path, capsys, name, value)


def test_the_python_api_refuses_the_same_values() -> None:
    with pytest.raises(InvalidOptionError, match=r"^--critic_steps: got -1; allowed: an integer >= 1$"):
        DigiQPipelineConfig(critic_steps=-1)
    with pytest.raises(InvalidOptionError, match="--eval_episodes"):
        DigiQPipelineConfig(eval_episodes=0)


@pytest.mark.parametrize(("name", "value"), [("bc_steps", 0), ("num_threads", 0), ("critic_max_grad_norm", 0.0),
                                             ("eval_temperature", 0.0), ("feature_layer", None),
                                             ("advantage_threshold", -1.0), ("candidate_resamples", 0)])
def test_zero_or_null_where_it_means_something(name, value) -> None:
    """The values whose meaning --help states (0 steps keeps the given base actor, 0 threads: automatic,
    0 clipping: none, temperature 0: greedy, null layer: the middle one) are accepted."""
    assert getattr(DigiQPipelineConfig(**{name: value}), name) == value


@pytest.mark.parametrize("name", ["bc_steps", "num_threads", "critic_max_grad_norm", "actor_max_grad_norm",
                                  "eval_temperature", "behavior_temperature", "feature_layer"])
def test_help_says_what_zero_or_null_means(name) -> None:
    help_text = next(f.metadata["help"] for f in fields(DigiQPipelineConfig) if f.name == name)
    assert re.search(r"\b(0( keeps|:)|null:)", help_text), help_text


def test_the_console_script_prints_one_line_and_no_traceback(tmp_path) -> None:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "digiq_trl.cli", "train", "--output_dir", str(tmp_path / "run"),
                             "--critic_steps", "-1"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert time.perf_counter() - start < 10
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "digiq-trl train: error: --critic_steps: got -1; allowed: an integer >= 1 (see --help)"]
    assert not (tmp_path / "run").exists()
