"""`ray job submit` of every jobs/ entry point to the session's local head (started with `ray start --head`),
with the runtime environment users submit with (cluster/runtime_env.yaml) and tiny settings."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import RAY, REPO, free_port
from tests.e2e.conftest import request


def submit(cluster, *entrypoint: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [RAY, "job", "submit", "--address", cluster.dashboard_url, "--runtime-env", "cluster/runtime_env.yaml", "--",
         "python", *entrypoint],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def job_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    out, registry = root / "job-out", root / "job-registry"
    submit(ray_cluster, "jobs/pipeline.py", "image", "--epochs", "2", "--output", str(out), "--registry", str(registry))
    return {"root": root, "out": out, "registry": registry}


def test_ray_job_submit_runs_the_pipeline(job_run):
    metrics = json.loads((job_run["out"] / "metrics.json").read_text())
    assert metrics["task"] == "image" and metrics["train"]["epochs_run"] == 2
    assert metrics["test"]["accuracy"] > 0.9
    assert (job_run["registry"] / "image" / "production.json").exists()


def test_ray_job_submit_runs_a_sweep(ray_cluster, tmp_path):
    out = tmp_path / "sweep"
    submit(ray_cluster, "jobs/tune.py", "image", "--num-samples", "2", "--epochs", "2", "--output", str(out),
           "--registry", str(tmp_path / "reg"))
    assert len((out / "results.csv").read_text().splitlines()) == 3  # header + 2 trials
    assert (out / "best_config.yaml").exists()


def test_ray_job_submit_runs_batch_inference(ray_cluster, job_run, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "in.npz", id=np.array([f"d{i:02d}" for i in range(40)]), images=digits.images[:40].astype(np.float32))
    submit(ray_cluster, "jobs/batch_predict.py", "image", "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out"),
           "--registry", str(job_run["registry"]))
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert len(out) == 40
    assert (out["prediction"].to_numpy() == digits.target[:40].astype(str)).mean() >= 0.85


def test_ray_job_submit_deploys_the_serve_app(ray_cluster, job_run):
    port = free_port()
    submit(ray_cluster, "jobs/deploy.py", "--registry", str(job_run["registry"]), "--tasks", "image", "--host", "127.0.0.1",
           "--port", str(port), "--replica-cpus", "0", "--proxy-location", "HeadOnly")
    try:  # the job has ended; the app it deployed keeps serving
        from sklearn.datasets import load_digits

        status, body = request(f"http://127.0.0.1:{port}/image/predict", {"pixels": load_digits().images[0].tolist()})
        assert status == 200 and body["label"] == "0", body
    finally:  # later tests start Serve with other HTTP options
        subprocess.run([str(Path(RAY).with_name("serve")), "shutdown", "--address", ray_cluster.dashboard_url, "--yes"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "token"})
