"""``import digiq_trl`` is cheap (no torch, no transformers) and still offers every public name."""

import ast
import inspect
import json
import subprocess
import sys
from types import ModuleType

import pytest

import digiq_trl
import digiq_trl.envs


HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "accelerate")


def modules_loaded_by(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules it loaded, and the Gymnasium ids it registered."""
    probe = (f"{code}\nimport json, sys, gymnasium\n"
             f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], "
             "'envs': sorted(i for i in gymnasium.registry if i.startswith('digiq_trl/'))}))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", ["import digiq_trl", "import digiq_trl.actions", "import digiq_trl.envs.phone"])
def test_import_loads_no_deep_learning_stack(code: str) -> None:
    loaded = modules_loaded_by(code)
    assert loaded["heavy"] == []
    assert loaded["envs"] == [
        "digiq_trl/Phone-general-target-v0", "digiq_trl/Phone-general-v0",
        "digiq_trl/Phone-webshop-target-v0", "digiq_trl/Phone-webshop-v0",
    ]


@pytest.mark.parametrize("command", [[], ["train"], ["diagnose"], ["train-base-actor"]],
                         ids=lambda c: " ".join(["digiq-trl", *c]))
def test_command_help_loads_no_deep_learning_stack(command: list[str]) -> None:
    code = ("import contextlib\nfrom digiq_trl.cli import main\n"
            f"with contextlib.suppress(SystemExit): main({command + ['--help']!r})")
    assert modules_loaded_by(code)["heavy"] == (["trl"] if command else [])  # trl itself imports lazily


@pytest.mark.parametrize("code", ["import contextlib\nfrom digiq_trl.cli import main\n"
                                  "with contextlib.suppress(SystemExit): main(['evaluate', '--help'])",
                                  "import contextlib\nfrom digiq_trl.cli import main\n"
                                  "with contextlib.suppress(SystemExit): main(['view', '--help'])",
                                  "import digiq_trl.envs.android, digiq_trl.envs.loopback, digiq_trl.judges"],
                         ids=["digiq-trl evaluate --help", "digiq-trl view --help",
                              "import the adb env, stand-in and judges"])
def test_evaluate_help_and_the_adb_modules_load_no_deep_learning_stack(code: str) -> None:
    assert modules_loaded_by(code)["heavy"] == []


def test_a_name_loads_what_it_needs() -> None:
    assert "torch" in modules_loaded_by("from digiq_trl import DigiQCritic")["heavy"]


@pytest.mark.parametrize("package", [digiq_trl, digiq_trl.envs], ids=lambda m: m.__name__)
def test_every_public_name_resolves_and_is_listed(package: ModuleType) -> None:
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package)


def test_names_are_the_submodules_objects() -> None:
    from digiq_trl.envs.phone import PhoneEnv
    from digiq_trl.trainers import DigiQCriticTrainer

    assert digiq_trl.PhoneEnv is PhoneEnv is digiq_trl.envs.PhoneEnv
    assert digiq_trl.DigiQCriticTrainer is DigiQCriticTrainer


def test_submodules_are_attributes_and_unknown_names_raise() -> None:
    assert isinstance(digiq_trl.targets, ModuleType)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        digiq_trl.NoSuchName  # noqa: B018
    with pytest.raises(ImportError):
        from digiq_trl import NoSuchName  # noqa: F401


@pytest.mark.parametrize("package", ["digiq_trl", "digiq_trl.viewer"])
def test_type_checking_imports_match_the_lazy_exports(package: str) -> None:
    """What IDEs and type checkers see (the ``if TYPE_CHECKING:`` imports) is what ``__getattr__`` serves."""
    module = __import__(package, fromlist=["_EXPORTS"])
    (block,) = [node for node in ast.parse(inspect.getsource(module)).body
                if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    imported = {"." * node.level + node.module: sorted(alias.name for alias in node.names) for node in block.body}
    assert imported == {name: sorted(names) for name, names in module._EXPORTS.items()}
