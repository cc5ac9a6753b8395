"""A cluster of several nodes on this machine, with S3 (the local moto server) as its only shared storage.

The head offers no CPUs (as on KubeRay and the launcher configs) and three worker nodes offer three CPUs each;
training workers take two CPUs each, so two of them must sit on two different nodes, and every artifact must
travel through S3. The CPU a worker leaves free on its node is what Ray needs, once a node is lost, to
recompute the dataset blocks that were stored on it.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from pipeline import storage
from tests.conftest import RAY, REPO, run_cli, start_head, start_ray_node, stop_ray_node
from tests.e2e.conftest import request, start_serve, stop_serve

BUCKET = "pipeline-multinode"
S3 = f"s3://{BUCKET}"


@pytest.fixture(scope="module")
def multi_node(tmp_path_factory, s3_server):
    s3_server.create_bucket(Bucket=BUCKET)
    logs = tmp_path_factory.mktemp("multi-node")
    cluster, head, temp_dir = start_head(logs, "--num-cpus=0")
    workers = {}
    try:
        for i in range(3):
            name = f"worker-{i}"
            workers[name] = start_ray_node([f"--address={cluster.address}", "--num-cpus=3", f"--node-name={name}",
                                            f"--temp-dir={temp_dir}-{name}"], logs / f"{name}.log")
        yield cluster, workers
    finally:
        for node in [*workers.values(), head]:
            stop_ray_node(node)
        for path in [temp_dir, *(f"{temp_dir}-{name}" for name in workers)]:
            shutil.rmtree(path, ignore_errors=True)


def ray_list(kind: str, cluster, *filters: str) -> list[dict]:
    """`ray list KIND` as JSON (a CLI process: this test process may be connected to another cluster)."""
    args = [RAY, "list", kind, "--address", cluster.address, "--format", "json", "--limit", "1000"]
    for f in filters:
        args += ["--filter", f]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return [] if result.stdout.startswith("No resource") else json.loads(result.stdout)


def kill_a_training_node_after_the_first_checkpoint(cluster, workers: dict, run_uri: str, killed: dict) -> None:
    """Finds the nodes of the run's training workers first, then, as soon as the controller has recorded a
    checkpoint in S3, SIGKILLs every process of one of them: the node is gone, as when a spot instance is
    reclaimed."""
    deadline = time.monotonic() + 400
    actors: list = []
    while len(actors) < 2 and time.monotonic() < deadline:
        actors = ray_list("actors", cluster, "class_name=RayTrainWorker", "state=ALIVE")
    names = {n["node_id"]: n["node_name"] for n in ray_list("nodes", cluster)}
    while time.monotonic() < deadline:
        if any(f.endswith("checkpoint_manager_snapshot.json") for f in storage.list_files(run_uri)):
            victim = actors[-1]["node_id"]
            os.killpg(workers[names[victim]].pid, signal.SIGKILL)
            killed.update(node_id=victim, name=names[victim])
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def resumed_run(multi_node):
    """`pipeline run image` with two workers, output and registry in S3, and a worker node killed mid-run."""
    cluster, workers = multi_node
    output, registry = f"{S3}/runs/image", f"{S3}/registry"
    killed: dict = {}
    killer = threading.Thread(target=kill_a_training_node_after_the_first_checkpoint,
                              args=(cluster, workers, f"{output}/checkpoints", killed), daemon=True)
    killer.start()
    # Small batches: an epoch lasts long enough for the node to die in the middle of the run.
    result = run_cli(["run", "image", "--num-workers", "2", "--cpus-per-worker", "2", "--epochs", "6", "--batch-size", "8", "--output", output,
                      "--registry", registry], cluster, timeout=900)
    killer.join(timeout=10)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return {"output": output, "registry": registry, "killed": killed, "stdout": result.stdout,
            "metrics": storage.read_json(f"{output}/metrics.json")}


def test_a_local_output_is_refused_before_any_work(multi_node, tmp_path):
    cluster, _ = multi_node
    result = run_cli(["run", "image", "--output", str(tmp_path / "out"), "--registry", f"{S3}/registry"], cluster)
    assert result.returncode == 2
    assert f"--output {tmp_path / 'out'}" in result.stderr and "s3://" in result.stderr and "--shared-storage" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_shared_storage_declares_a_local_path_reachable(multi_node, tmp_path):
    cluster, _ = multi_node  # every node of this cluster is this machine: a local path is as good as NFS
    result = run_cli(["data", "image", "--output", str(tmp_path / "data"), "--shared-storage"], cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "data" / "data_report.json").read_text())["rows_kept"] == 1797


def test_workers_on_two_nodes_resume_from_s3_after_a_node_is_lost(resumed_run):
    metrics, killed = resumed_run["metrics"], resumed_run["killed"]
    assert killed, "no worker node was killed during training"
    first, *restarts = metrics["train"]["worker_nodes"]
    assert len(set(first)) == 2, first  # two training workers on two different nodes
    assert killed["node_id"] in first
    assert restarts and all(killed["node_id"] not in nodes for nodes in restarts)  # restarted without the lost node
    resumed = metrics["train"]["resumed_from_epochs"]
    assert resumed and resumed[0] > 0, resumed  # from the last S3 checkpoint, not from epoch 0
    assert [h["epoch"] for h in metrics["train"]["history"]] == list(range(1, 7))
    assert f"resumed from checkpoint after epoch {resumed[0]}" in resumed_run["stdout"]
    assert metrics["test"]["accuracy"] > 0.9
    assert metrics["output_dir"] == resumed_run["output"]


def test_every_artifact_is_in_s3(resumed_run):
    files = storage.list_files(resumed_run["output"])
    assert any(f.startswith("checkpoints/") and f.endswith("/model.safetensors") for f in files), files
    for name in ("metrics.json", "data_report.json", "model/model.safetensors", "model/preprocessor.json",
                 "confusion_matrix.png", "learning_curves.png"):
        assert name in files, name
    assert any(f.startswith("quarantine/") and f.endswith(".parquet") for f in files), files
    run_id = resumed_run["metrics"]["run_id"]
    registered = storage.list_files(f"{resumed_run['registry']}/image")
    assert {"production.json", f"runs/{run_id}/model.safetensors", f"runs/{run_id}/metrics.json"} <= set(registered)
    assert not (REPO / "s3:").exists()  # nothing was written to a local folder named after the URI


def test_serve_answers_from_the_s3_registry(multi_node, resumed_run):
    from pipeline.tasks import get_task

    cluster, _ = multi_node
    base, proc = start_serve(cluster, resumed_run["registry"], ["image"])
    try:
        payload, expected = get_task("image").example_request()
        status, body = request(base + "/image/predict", payload)
        assert status == 200, body
        assert body["label"] == expected
        status, body = request(base + "/models")
        assert body["models"][0]["run_id"] == resumed_run["metrics"]["run_id"]
    finally:
        stop_serve(proc)


def test_batch_predictions_read_and_land_in_s3(multi_node, resumed_run):
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    cluster, _ = multi_node
    digits = load_digits()
    buf = io.BytesIO()
    np.savez(buf, id=np.array([f"d{i:02d}" for i in range(60)]), images=digits.images[:60].astype(np.float32))
    storage.write_bytes(f"{S3}/inputs/digits.npz", buf.getvalue())
    result = run_cli(["batch-predict", "image", "--input", f"{S3}/inputs/digits.npz", "--output", f"{S3}/predictions",
                      "--registry", resumed_run["registry"]], cluster)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    fs, path = storage.filesystem(f"{S3}/predictions")
    out = pq.read_table(path, filesystem=fs).to_pandas().sort_values("id")
    assert len(out) == 60
    assert (out["prediction"].to_numpy() == digits.target[:60].astype(str)).mean() >= 0.9


def test_a_sweep_runs_on_the_cluster_with_s3_storage(multi_node, resumed_run):
    cluster, _ = multi_node
    output, sweeps = f"{S3}/tune/image", f"{S3}/sweeps"
    result = run_cli(["tune", "image", "--num-samples", "2", "--epochs", "2", "--output", output, "--storage", sweeps,
                      "--registry", resumed_run["registry"]], cluster, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len(storage.read_text(f"{output}/results.csv").splitlines()) == 3  # header + 2 trials
    assert storage.exists(f"{output}/best_config.yaml") and storage.exists(f"{output}/model/model.safetensors")
    assert any(f.endswith("/model.safetensors") for f in storage.list_files(f"{sweeps}/image-tune"))
