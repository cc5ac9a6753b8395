"""Experiment tracking: every `pipeline run` writes TensorBoard event files (read back here as TensorBoard
reads them), and `--mlflow-uri` logs the run to a real MLflow tracking server process, read back through
the MLflow client, with the production pointer mirrored as the registered model's alias."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli
from tests.tensorboard_events import read_events


def test_a_run_writes_per_epoch_metrics_lr_and_the_confusion_matrix(image_run):
    m = image_run["metrics"]
    scalars, images = read_events(image_run["output"] / "tensorboard")
    epochs = [h["epoch"] for h in m["train"]["history"]]
    for name in ("train/loss", "val/accuracy", "val/loss", "lr"):
        assert [step for step, _ in scalars[name]] == epochs, name
    for (_, logged), epoch in zip(scalars["val/accuracy"], m["train"]["history"]):  # float32 in the events
        assert abs(logged - epoch["val_accuracy"]) < 1e-6
    assert abs(scalars["test_final/accuracy"][0][1] - m["test"]["accuracy"]) < 1e-6
    assert "test_final/confusion_matrix" in images


def test_every_candidate_has_its_events_baselines_too(text_run):
    m = text_run["metrics"]
    for name, candidate in m["candidates"].items():
        scalars, _ = read_events(text_run["output"] / "candidates" / name / "tensorboard")
        assert abs(scalars["val_final/accuracy"][0][1] - candidate["val"]["accuracy"]) < 1e-6, name
        if candidate["kind"] == "trained":
            assert len(scalars["train/loss"]) >= 1, name


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server process on 127.0.0.1 (SQLite backend, artifacts served by it)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
                             "--workers", "1"], stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):  # bounded wait for the server to answer
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited:\n{(root / 'server.log').read_text()[-3000:]}")
    else:
        proc.kill()
        pytest.fail("mlflow server did not answer /health within 120 s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def test_a_run_logs_to_an_mlflow_server_and_mirrors_production(ray_cluster, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    out, registry = tmp_path / "run", tmp_path / "registry"
    result = run_cli(["run", "image", "--epochs", "2", "--output", str(out), "--registry", str(registry), "--mlflow-uri", mlflow_server],
                     ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name("pipeline-image").experiment_id],
                               filter_string=f"tags.`pipeline.run_id` = '{metrics['run_id']}'")
    assert run.info.run_id == metrics["mlflow"]["run_id"]
    assert run.data.params["train.epochs"] == "2" and run.data.params["task"] == "image"
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [m.step for m in history] == [1, 2]
    assert abs(run.data.metrics["test_final/accuracy"] - metrics["test"]["accuracy"]) < 1e-9
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"metrics.json", "confusion_matrix.png", "learning_curves.png", "model/model.safetensors", "model/config.json"} <= artifacts
    production = client.get_model_version_by_alias("pipeline-image", "production")
    assert production.run_id == run.info.run_id and int(production.version) == metrics["mlflow"]["version"]

    promoted = run_cli(["registry", "promote", "image", metrics["run_id"], "--registry", str(registry), "--mlflow-uri", mlflow_server])
    assert promoted.returncode == 0 and f"alias production -> version {production.version}" in promoted.stdout, promoted.stderr
