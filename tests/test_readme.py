"""The README's Python example runs as written (at the toy sizes it states) and does what it says."""

import re
from pathlib import Path

import pytest
import torch


README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    """The first Python block of the README's "Use the trainers from Python" section."""
    section = README.read_text().split("## Use the trainers from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README lost its Python example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_python_example(), namespace)
    actor_trainer = namespace["actor_trainer"]
    assert 0.0 <= namespace["metrics"]["eval_ranking_accuracy"] <= 1.0
    assert (tmp_path / "digiq-critic" / "model.safetensors").exists()
    assert (tmp_path / "digiq-actor" / "adapter_config.json").exists()
    assert actor_trainer.state.global_step == 4
    lora = [p for n, p in actor_trainer.model.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # the adapter moved away from its zero init
    assert torch.isfinite(torch.tensor(actor_trainer.state.log_history[-1]["train_loss"]))
