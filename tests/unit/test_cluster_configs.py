"""The cluster configs parse and point at code that exists."""

import importlib
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
REPO = CLUSTER.parent


def test_every_cluster_yaml_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        assert yaml.safe_load(path.read_text()), path


def test_serve_configs_import_the_app_builder():
    configs = [yaml.safe_load((CLUSTER / "serve_config.yaml").read_text())]
    configs.append(yaml.safe_load(yaml.safe_load((CLUSTER / "kuberay" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"]))
    for config in configs:
        for app in config["applications"]:
            module, attr = app["import_path"].split(":")
            assert callable(getattr(importlib.import_module(module), attr))
            assert set(app["args"]) <= {"registry", "tasks", "reload_interval_s", "replica_cpus"}


def test_job_entrypoints_exist():
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    script = job["spec"]["entrypoint"].split()[1]
    assert (REPO / script).is_file()
