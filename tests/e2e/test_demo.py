"""`pipeline demo`: trains, evaluates, registers and answers one HTTP request per task. The session's
demo (the `demo_run` fixture: tabular, text and recommender, whose candidates train in one Ray Train run)
also feeds those tasks' own tests; image's run is `pipeline run image`."""

import json
import re

from tests.e2e.conftest import DEMO_TASKS


def test_demo_runs_end_to_end_with_an_http_answer(demo_run):
    stdout = demo_run["stdout"]
    assert "POST /tabular/predict ->" in stdout and "(expected <=50K)" in stdout
    assert '"label": "<=50K"' in stdout  # the answer itself, not only what was expected
    assert "POST /text/predict ->" in stdout and "(expected positive, negative)" in stdout
    text_answer = next(line for line in stdout.splitlines() if line.startswith("[text] POST"))
    assert re.findall(r'"label": "(\w+)"', text_answer) == ["positive", "negative"], text_answer
    assert "POST /recommender/recommend ->" in stdout and '"method": "model"' in stdout
    assert f"model candidates of {len(DEMO_TASKS)} tasks in one Ray Train run" in stdout
    assert "demo summary" in stdout and "shared training run: worker start-up" in stdout
    walls = []
    for task in DEMO_TASKS:
        metrics = json.loads((demo_run["root"] / task / "metrics.json").read_text())
        assert metrics["train"]["epochs_run"] >= 1 and metrics["timings"]["training"] > 0
        walls.append(metrics["wall_seconds"])
    # Each task's time is its own: the other tasks' stages and the shared worker start-up are not in it.
    total = float(re.search(r"total wall time: (\d+)s", stdout).group(1))
    assert sum(walls) <= total + 1
