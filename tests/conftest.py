"""Shared fixtures: one local Ray head for the whole session (`ray start --head --block` on
127.0.0.1; at the end SIGTERM to that process stops its Ray processes and no others), used by
integration tests in-process and by e2e tests through the CLI, Serve and `ray job submit`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


# S3 tests talk to a local moto server; the endpoint is fixed before Ray starts so that Ray's
# workers (which read s3:// URIs) inherit it too.
S3_PORT = free_port()
os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})


@dataclass
class Cluster:
    address: str  # GCS address for ray.init / --address
    dashboard_url: str  # job submission endpoint


def start_ray_node(args: list[str], log_path: Path) -> subprocess.Popen:
    """`ray start --block ARGS` in a process group of its own; returns once the node is up."""
    env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # nothing to drain when the tests end
    with open(log_path, "w") as log:
        node = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while "block forever" not in log_path.read_text():  # bounded wait for `ray start` to finish starting
        if node.poll() is not None or time.monotonic() > deadline:
            stop_ray_node(node)
            pytest.fail(f"ray start {' '.join(args)} failed:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return node


def stop_ray_node(node: subprocess.Popen) -> None:
    """SIGTERM stops this node's Ray processes and no others."""
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=120)
    except subprocess.TimeoutExpired:
        node.kill()


def start_head(log_dir: Path, *args: str) -> tuple[Cluster, subprocess.Popen, str]:
    """A head node on 127.0.0.1 with a temp dir of its own: its files, and its "latest cluster" pointer,
    stay out of /tmp/ray, so a later plain `ray.init()` on this machine neither finds this head nor loses
    a cluster of the user's. (Short: Ray's socket paths live under it.)"""
    port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-tests-", dir="/tmp")
    head = start_ray_node(["--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                           "--include-dashboard=true", f"--temp-dir={temp_dir}", *args], log_dir / "ray-head.log")
    return Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}"), head, temp_dir


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    cluster, head, temp_dir = start_head(tmp_path_factory.mktemp("ray-head"), "--num-cpus=4")
    try:
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        stop_ray_node(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1; yields a boto3 client."""
    import time

    import boto3

    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(S3_PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = boto3.client("s3")
    for _ in range(100):  # bounded wait for the server to listen
        try:
            client.list_buckets()
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield client
    proc.terminate()
    proc.wait(timeout=30)


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
