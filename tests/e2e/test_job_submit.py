"""`ray job submit` of jobs/pipeline.py to the session's local head (started with `ray start --head`)."""

import json
import os
import subprocess

from tests.conftest import REPO, RAY


def test_ray_job_submit_runs_the_pipeline(ray_cluster, tmp_path):
    out, registry = tmp_path / "job-out", tmp_path / "job-registry"
    result = subprocess.run(
        [RAY, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", str(REPO), "--",
         "python", "jobs/pipeline.py", "image", "--epochs", "2", "--output", str(out), "--registry", str(registry)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "image" and metrics["train"]["epochs_run"] == 2
    assert metrics["test"]["accuracy"] > 0.9
    assert (registry / "image" / "production.json").exists()


def test_ray_job_submit_runs_a_sweep(ray_cluster, tmp_path):
    out = tmp_path / "sweep"
    result = subprocess.run(
        [RAY, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", str(REPO), "--",
         "python", "jobs/tune.py", "image", "--num-samples", "2", "--epochs", "2", "--output", str(out),
         "--registry", str(tmp_path / "reg")],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert len((out / "results.csv").read_text().splitlines()) == 3  # header + 2 trials
    assert (out / "best_config.yaml").exists()
