"""A fifth workload from two files (tests/workloads/toy.py and toy.yaml): `pipeline run` trains it
and `pipeline serve` answers its route, with nothing in the pipeline changed."""

import json

from tests.conftest import run_cli
from tests.e2e.conftest import request, start_serve, stop_serve

TOY = {"PIPELINE_TASKS": "tests.workloads.toy"}


def test_a_toy_workload_trains_and_serves(ray_cluster, tmp_path):
    registry = tmp_path / "registry"
    result = run_cli(["run", "toy", "--output", str(tmp_path / "run"), "--registry", str(registry)], ray_cluster, env=TOY)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "toy" and metrics["test"]["accuracy"] >= 0.9
    assert metrics["data"]["rows_in"] == 1000 and set(metrics["test"]["per_class"]) == {"inside", "outside"}
    assert (registry / "toy" / "production.json").exists()

    base, proc = start_serve(ray_cluster, registry, ["toy"], env=TOY)
    try:
        assert list(request(base + "/healthz")[1]["tasks"]) == ["toy"]
        status, body = request(base + "/toy/predict", {"x": 0.1, "y": -0.2})
        assert status == 200 and body["label"] == "inside" and body["run_id"] == metrics["run_id"], body
        assert request(base + "/toy/predict", {"x": 1.9, "y": 1.8})[1]["label"] == "outside"
        status, body = request(base + "/toy/predict", {"x": 0.1, "z": 1})
        assert status == 422 and "z" in json.dumps(body["detail"]) and "y" in json.dumps(body["detail"])
    finally:
        stop_serve(proc)
