"""Baselines are candidates: fitted, evaluated, selected and served like the trained models, so the
served model never scores below a baseline on validation."""

import pytest

from pipeline.predictor import Predictor
from pipeline.tasks import get_task

RUNS = ["text_run", "tabular_run", "recommender_run"]


@pytest.mark.parametrize("fixture", RUNS)
def test_the_served_model_scores_at_least_every_baseline_on_validation(fixture, request):
    m = request.getfixturevalue(fixture)["metrics"]
    metric, mode = get_task(m["task"]).selection
    candidates = m["candidates"]
    baselines = {n: c for n, c in candidates.items() if c["kind"] == "baseline" and metric in c["val"]}
    assert baselines, f"{m['task']} has no baseline candidate scored on {metric}"
    served = candidates[m["served_model"]]["val"][metric]
    for name, baseline in baselines.items():
        assert (served >= baseline["val"][metric]) if mode == "max" else (served <= baseline["val"][metric]), name
    for name, candidate in candidates.items():  # the table holds every candidate on both splits
        assert candidate["kind"] in ("trained", "baseline") and candidate["val"]["rows"] > 0 and candidate["test"]["rows"] > 0, name
    for arch in {c["arch"] for c in baselines.values()}:  # and metrics.json's `baselines` their test scores
        assert metric in m["baselines"][arch]


@pytest.mark.parametrize("fixture", RUNS)
def test_every_baseline_model_folder_loads_and_answers(fixture, request):
    """A baseline's model folder is a model like any other: the Predictor loads it (safetensors or skops)
    and the task answers a request with it."""
    run = request.getfixturevalue(fixture)
    m = run["metrics"]
    for name, candidate in m["candidates"].items():
        if candidate["kind"] != "baseline":
            continue
        folder = run["output"] / "candidates" / name / "model"
        assert {p.name for p in folder.iterdir()} >= {"preprocessor.json", "config.json"}
        assert (folder / "model.safetensors").exists() != (folder / "model.skops").exists()
        predictor = Predictor(str(folder))
        assert predictor.config.model.arch == candidate["arch"]
        task = predictor.task
        example, _ = task.example_request()
        answer = task.answer(task.request_model(**example).model_dump(), predictor)
        assert answer["task"] == m["task"], answer


def test_the_tabular_baseline_is_stored_in_skops_format_and_served_when_it_wins(tabular_run):
    m = tabular_run["metrics"]
    assert (tabular_run["output"] / "candidates" / "hist_gradient_boosting" / "model" / "model.skops").exists()
    if m["served_model"] == "hist_gradient_boosting":  # the registered copy is the skops file too
        run = tabular_run["registry"] / "tabular" / "runs" / m["run_id"]
        assert (run / "model.skops").exists() and not (run / "model.safetensors").exists()
