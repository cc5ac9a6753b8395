import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO, free_port, run_cli


def request(url: str, payload=None) -> tuple[int, dict]:
    return post_raw(url, None if payload is None else json.dumps(payload).encode())


def post_raw(url: str, data: bytes | None) -> tuple[int, dict]:
    """POSTs `data` as JSON (GET when None); (status, parsed body)."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:  # e.g. the proxy's plain-text 404 before the app is deployed
        return status, {"raw": raw.decode(errors="replace")}


def start_serve(cluster, registry, tasks: list[str], *args: str, env: dict | None = None) -> tuple[str, subprocess.Popen]:
    """`pipeline serve` on a free 127.0.0.1 port, once /healthz answers: (base URL, process)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--host", "127.0.0.1", "--port", str(port), "--registry", str(registry),
         "--tasks", *tasks, "--address", cluster.address, *args],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):  # bounded wait for the app to come up
        if proc.poll() is not None:
            pytest.fail(f"pipeline serve exited early:\n{proc.stdout.read()[-3000:]}")
        try:
            if request(base + "/healthz")[0] == 200:
                return base, proc
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail("Serve did not answer /healthz within 120 s")


def stop_serve(proc: subprocess.Popen, timeout: float = 90) -> str | None:
    """SIGINT to `pipeline serve` (it shuts Serve down); its output, or None when it had to be killed."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


@pytest.fixture(scope="session")
def e2e_registry(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-registry")


def run_folder(out, registry, stdout: str) -> dict:
    return {"output": out, "registry": registry, "metrics": json.loads((out / "metrics.json").read_text()), "stdout": stdout}


@pytest.fixture(scope="session")
def image_run(ray_cluster, tmp_path_factory, e2e_registry):
    """`pipeline run image` with the default config into the shared e2e registry, as a user runs one task."""
    out = tmp_path_factory.mktemp("e2e-runs") / "image"
    result = run_cli(["run", "image", "--output", str(out), "--registry", str(e2e_registry)], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_folder(out, e2e_registry, result.stdout)


DEMO_TASKS = ("tabular", "text", "recommender")


@pytest.fixture(scope="session")
def demo_run(ray_cluster, tmp_path_factory, e2e_registry):
    """`pipeline demo` of the other three tasks into the shared e2e registry, with their default configs:
    their candidates train in one Ray Train run, as in a user's demo, and each task's tests read its run
    folder (one worker-group start instead of three `pipeline run`s)."""
    root = tmp_path_factory.mktemp("e2e-demo")
    result = run_cli(["demo", "--tasks", *DEMO_TASKS, "--output", str(root), "--registry", str(e2e_registry)], ray_cluster,
                     timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "registry": e2e_registry, "stdout": result.stdout}


def demo_task_fixture(task: str):
    @pytest.fixture(scope="session")
    def run(demo_run):
        return run_folder(demo_run["root"] / task, demo_run["registry"], demo_run["stdout"])

    return run


tabular_run = demo_task_fixture("tabular")
text_run = demo_task_fixture("text")
recommender_run = demo_task_fixture("recommender")
