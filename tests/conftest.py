"""Shared fixtures: one local Ray head for the whole session (started with `ray start --head` on
127.0.0.1, stopped at the end), used by integration tests in-process and by e2e tests through
the CLI, Serve and `ray job submit`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

# Ray 2.60 clusters use token authentication. The session's head and every client (this process,
# CLI subprocesses, `ray job submit`) share one token through the environment; ~/.ray is not touched.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", uuid.uuid4().hex)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# As in an activated virtual environment: `python` in a job's entrypoint is this interpreter.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str  # GCS address for ray.init / --address
    dashboard_url: str  # job submission endpoint


@pytest.fixture(scope="session")
def ray_cluster():
    port, dashboard_port = free_port(), free_port()
    cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard_port}", "--num-cpus=4", "--include-dashboard=true", "--disable-usage-stats"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=120)
    try:
        yield Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}")
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    """This test process connected to the session's Ray head."""
    from pipeline.runtime import init_ray

    init_ray(ray_cluster.address)
    yield ray_cluster


def run_cli(args: list[str], cluster: Cluster | None = None, timeout: float = 600, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m pipeline ARGS` (connected to the session's cluster) and returns the result."""
    full_env = {**os.environ, **(env or {})}
    if cluster is not None:
        full_env["RAY_ADDRESS"] = cluster.address
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)
