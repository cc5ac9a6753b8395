import json

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="session")
def e2e_registry(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-registry")


def cli_run(task: str, cluster, root, registry) -> dict:
    """`pipeline run TASK` with the default config, as a user runs it."""
    out = root / task
    result = run_cli(["run", task, "--output", str(out), "--registry", str(registry)], cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"output": out, "registry": registry, "metrics": json.loads((out / "metrics.json").read_text()),
            "stdout": result.stdout}


@pytest.fixture(scope="session")
def image_run(ray_cluster, tmp_path_factory, e2e_registry):
    return cli_run("image", ray_cluster, tmp_path_factory.mktemp("e2e-runs"), e2e_registry)


@pytest.fixture(scope="session")
def tabular_run(ray_cluster, tmp_path_factory, e2e_registry):
    return cli_run("tabular", ray_cluster, tmp_path_factory.mktemp("e2e-runs"), e2e_registry)


@pytest.fixture(scope="session")
def text_run(ray_cluster, tmp_path_factory, e2e_registry):
    return cli_run("text", ray_cluster, tmp_path_factory.mktemp("e2e-runs"), e2e_registry)


@pytest.fixture(scope="session")
def recommender_run(ray_cluster, tmp_path_factory, e2e_registry):
    return cli_run("recommender", ray_cluster, tmp_path_factory.mktemp("e2e-runs"), e2e_registry)
