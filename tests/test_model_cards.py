"""Model card helpers: latest metrics, and where usage code loads a model from."""

from digiq_trl.trainers.model_cards import hub_repo_id, latest_eval_metrics, model_source, repo_literal


def test_latest_eval_metrics_keeps_the_last_value_of_each_prefix_without_timings() -> None:
    history = [{"eval_loss": 2.0, "loss": 1.0}, {"test_loss": 3.0, "test_runtime": 0.1}, {"eval_loss": 1.5}]
    assert latest_eval_metrics(history) == {"eval_loss": 1.5}
    assert latest_eval_metrics(history, ("eval_", "test_")) == {"eval_loss": 1.5, "test_loss": 3.0}


def test_hub_ids_are_owner_slash_name_and_not_local_paths(tmp_path) -> None:
    (tmp_path / "org").mkdir()
    assert hub_repo_id("Qwen/Qwen2-VL-2B-Instruct") == "Qwen/Qwen2-VL-2B-Instruct"
    for not_hub in (None, "", "/abs/path", "./rel/path", "a/b/c", str(tmp_path / "org")):
        assert hub_repo_id(not_hub) is None, not_hub


def test_model_source_says_plainly_when_there_is_no_hub_id() -> None:
    assert model_source("Qwen/Qwen2-VL-2B-Instruct", "the base model").note == ""
    local = model_source("/runs/base_actor", "the base model")
    assert local.literal == "'/runs/base_actor'" and local.note.startswith("The base model has no Hub id")
    built = model_source("", "the base model", "Qwen2VLForConditionalGeneration")
    assert built.literal == "'path/to/base-model'" and "built in memory" in built.note
    assert repo_literal("me/critic") == "'me/critic'" and "no Hub id" in repo_literal("/runs/critic")


def test_local_folders_are_named_as_they_travel() -> None:
    assert repo_literal("/runs/x/.critic.staging-1/critic").startswith("'critic'  # this card's folder")
    beside = model_source("../representation", "the feature backbone")
    assert beside.literal == "'../representation'" and "beside this card's folder" in beside.note
