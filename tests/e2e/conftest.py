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


def task_run_fixture(task: str):
    """A session fixture: `pipeline run TASK` into the shared e2e registry."""

    @pytest.fixture(scope="session")
    def run(ray_cluster, tmp_path_factory, e2e_registry):
        return cli_run(task, ray_cluster, tmp_path_factory.mktemp("e2e-runs"), e2e_registry)

    return run


image_run = task_run_fixture("image")
tabular_run = task_run_fixture("tabular")
text_run = task_run_fixture("text")
recommender_run = task_run_fixture("recommender")
