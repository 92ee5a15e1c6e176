"""Test-wide settings: offline, deterministic, one torch thread per worker."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def noisy_expert_data(tmp_path_factory) -> str:
    """The toy runs' offline data (:func:`toy_run.save_noisy_expert_data`), collected once per session."""
    from toy_run import save_noisy_expert_data

    return save_noisy_expert_data(tmp_path_factory.mktemp("data") / "transitions")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, noisy_expert_data):
    """A toy run finished up to the actor stage (one seed), recording the config fields each stage
    reads (``toy_run.READS``); tests that damage it work on copies."""
    from toy_run import TOY, RecordingConfig, RecordingPipeline

    out = tmp_path_factory.mktemp("finished") / "run"
    config = RecordingConfig(output_dir=str(out), dataset=noisy_expert_data, skip_stages=["evaluate"],
                             **{**TOY, "actor_seeds": [0]})
    RecordingPipeline(config).run()
    return config
