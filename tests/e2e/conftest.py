import json

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="session")
def image_run(ray_cluster, tmp_path_factory):
    """`pipeline run image` with the default config, as a user runs it; shared by the e2e tests."""
    root = tmp_path_factory.mktemp("e2e-image")
    out, registry = root / "run", root / "registry"
    result = run_cli(["run", "image", "--output", str(out), "--registry", str(registry)], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"output": out, "registry": registry, "metrics": json.loads((out / "metrics.json").read_text()),
            "stdout": result.stdout}
