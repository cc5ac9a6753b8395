"""`pipeline demo`: trains, evaluates, registers and answers one HTTP request (here: the image task only;
the other tasks' runs are covered by their own `pipeline run` tests)."""

from tests.conftest import run_cli


def test_demo_runs_end_to_end_with_an_http_answer(ray_cluster, tmp_path):
    result = run_cli(["demo", "--tasks", "image", "--output", str(tmp_path / "demo"), "--registry", str(tmp_path / "reg")],
                     ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "POST /image/predict ->" in result.stdout and "(expected 0)" in result.stdout
    assert '"label": "0"' in result.stdout
    assert "demo summary" in result.stdout and (tmp_path / "demo" / "image" / "metrics.json").exists()
