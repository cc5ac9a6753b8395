"""The cluster configs are valid for the Ray they pin, run the one documented image, and point at code that exists."""

import copy
import importlib
import re
from pathlib import Path

import pytest
import ray
import yaml

from pipeline.tasks import task_names

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
REPO = CLUSTER.parent
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
MANIFESTS = ["raycluster.yaml", "rayjob.yaml", "rayservice.yaml"]
APP_ARGS = {"task", "registry", "tasks", "settings", "shared_storage"}
IMAGE_WORKDIR = "/app"  # where the Dockerfile puts the project


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def documented_image() -> str:
    """The one tag cluster/README.md documents (with its build command)."""
    tags = set(re.findall(r"ghcr\.io/[\w./-]+:[\w.-]+", (CLUSTER / "README.md").read_text()))
    assert len(tags) == 1, tags
    return tags.pop()


def cluster_spec(manifest: dict) -> dict:
    spec = manifest["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def pod_specs(manifest: dict) -> list[dict]:
    spec = cluster_spec(manifest)
    pods = [spec["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]
    if "submitterPodTemplate" in manifest["spec"]:
        pods.append(manifest["spec"]["submitterPodTemplate"]["spec"])
    return pods


def serve_configs() -> list[dict]:
    return [load(CLUSTER / "serve_config.yaml"), yaml.safe_load(load(CLUSTER / "kuberay" / "rayservice.yaml")["spec"]["serveConfigV2"])]


def test_every_cluster_yaml_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert yaml.safe_load(path.read_text()), path


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_pass_rays_own_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(CLUSTER / name)
    prepared = prepare_config(copy.deepcopy(config))  # merges the provider's defaults, as `ray up` does
    validate_config(prepared)  # ray/autoscaler/ray-schema.json and the launcher's own checks
    nodes = config["available_node_types"]
    head, workers = nodes[config["head_node_type"]], [n for k, n in nodes.items() if k != config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
    assert workers and all(w["max_workers"] >= w["min_workers"] for w in workers)
    assert config["docker"]["image"] == documented_image() and not config["setup_commands"]  # no torch download at boot
    assert {".venv", ".git"} <= set(config["rsync_exclude"])
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c)
    storage_access = "IamInstanceProfile" if config["provider"]["type"] == "aws" else "serviceAccounts"
    assert all(storage_access in n["node_config"] for n in nodes.values())


def test_the_schema_check_catches_mistakes():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(CLUSTER / "aws.yaml")
    config["available_node_types"]["gpu_worker"]["max_worker"] = 4  # a typo
    with pytest.raises(ValidationError):
        validate_config(prepare_config(config))


def test_serve_configs_pass_serves_schema_and_import_the_app_builder():
    from ray.serve.schema import ServeDeploySchema

    for config in serve_configs():
        schema = ServeDeploySchema.model_validate(config)
        task_apps = {}
        for app in schema.applications:
            module, attr = app.import_path.split(":")
            builder = getattr(importlib.import_module(module), attr)
            assert set(app.args) <= APP_ARGS
            builder(app.args)  # builds the application: the settings validate, the task exists
            if "task" in app.args:
                assert app.args["registry"].startswith("s3://")  # shared storage: replicas may sit on any node
                assert app.name == f"pipeline-{app.args['task']}" and app.route_prefix == f"/{app.args['task']}"
                task_apps[app.args["task"]] = app
            else:
                gateway = app
        assert gateway.route_prefix == "/" and sorted(gateway.args["tasks"]) == sorted(task_apps) == sorted(task_names())


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifests(name):
    manifest = load(CLUSTER / "kuberay" / name)
    spec = cluster_spec(manifest)
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head.get("serviceType", "ClusterIP") == "ClusterIP"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265 and ports["gcs-server"] == 6379 and ports["client"] == 10001
    if manifest["kind"] != "RayJob":
        assert ports["serve"] == 8000
    assert spec["authOptions"] == {"mode": "token", "secretName": "dl-pipeline-ray-token"}
    for pod in pod_specs(manifest):
        assert pod["serviceAccountName"] == "dl-pipeline"
        assert {c["image"] for c in pod["containers"]} == {documented_image()}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        if "nvidia.com/gpu" in limits:
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in group["template"]["spec"]["tolerations"]


def test_the_rayjob_runs_an_entry_point_of_this_repo_on_s3():
    job = load(CLUSTER / "kuberay" / "rayjob.yaml")["spec"]
    words = job["entrypoint"].split()
    assert words[0] == "python" and (REPO / words[1]).is_file()
    assert yaml.safe_load(job["runtimeEnvYAML"])["working_dir"] == IMAGE_WORKDIR
    assert words[words.index("--output") + 1].startswith("s3://") and words[words.index("--registry") + 1].startswith("s3://")
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0


def test_the_service_account_documents_cloud_storage_identities():
    text = (CLUSTER / "kuberay" / "serviceaccount.yaml").read_text()
    assert load(CLUSTER / "kuberay" / "serviceaccount.yaml")["metadata"]["name"] == "dl-pipeline"
    assert "eks.amazonaws.com/role-arn" in text and "iam.gke.io/gcp-service-account" in text


def test_the_dockerfile_builds_the_documented_image_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-" in dockerfile  # the pinned Ray
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"^WORKDIR\s+{IMAGE_WORKDIR}$", dockerfile, re.M)
    assert documented_image() in dockerfile
    for path in ("pipeline", "jobs", "cluster"):
        assert re.search(rf"^COPY .*\b{path}\b", dockerfile, re.M), path
    makefile = (REPO / "Makefile").read_text()
    assert f"IMAGE  ?= {documented_image()}" in makefile


def test_every_job_entry_point_wraps_a_cli_verb():
    from pipeline.cli import COMMANDS

    verbs = {"pipeline.py": "run", "tune.py": "tune", "batch_predict.py": "batch-predict", "deploy.py": "deploy"}
    for script, verb in verbs.items():
        text = (REPO / "jobs" / script).read_text()
        assert verb in COMMANDS and f'main(["{verb}", *sys.argv[1:]])' in text


def test_the_runtime_env_keeps_the_upload_small():
    env = load(CLUSTER / "runtime_env.yaml")
    assert env["working_dir"] == "."
    assert {".git", ".venv", "runs", "tests"} <= set(env["excludes"])
