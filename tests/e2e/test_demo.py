"""`pipeline demo`: trains, evaluates, registers and answers one HTTP request per task (here: two tasks,
whose candidates train in one Ray Train run; the other tasks' runs are covered by their own tests)."""

import json
import re

from tests.conftest import run_cli


def test_demo_runs_end_to_end_with_an_http_answer(ray_cluster, tmp_path):
    result = run_cli(["demo", "--tasks", "image", "tabular", "--output", str(tmp_path / "demo"), "--registry", str(tmp_path / "reg")],
                     ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "POST /image/predict ->" in result.stdout and "(expected 0)" in result.stdout
    assert '"label": "0"' in result.stdout
    assert "POST /tabular/predict ->" in result.stdout
    assert "model candidates of 2 tasks in one Ray Train run" in result.stdout
    assert "demo summary" in result.stdout and "shared training run: worker start-up" in result.stdout
    walls = []
    for task in ("image", "tabular"):
        metrics = json.loads((tmp_path / "demo" / task / "metrics.json").read_text())
        assert metrics["train"]["epochs_run"] >= 1 and metrics["timings"]["training"] > 0
        walls.append(metrics["wall_seconds"])
    # Each task's time is its own: the other task's stages and the shared worker start-up are not in it.
    total = float(re.search(r"total wall time: (\d+)s", result.stdout).group(1))
    assert sum(walls) <= total + 1
