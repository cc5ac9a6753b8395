"""Starting the Serve applications: `pipeline serve` (foreground; SIGINT/SIGTERM shut it down cleanly) and
`pipeline deploy` / `jobs/deploy.py` (deploys onto a cluster and leaves it running)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator

from pipeline.registry import Registry
from pipeline.serve.settings import ServeSettings


def deploy(registry: Registry, host: str, port: int, tasks: list[str] | None, settings: ServeSettings,
           proxy_location: str = "HeadOnly", shared_storage: bool = False, log=print) -> list[str]:
    """Deploys one application per task and the gateway (Ray must be initialised); returns the tasks. The
    registry must be reachable from every node that may host a replica: on a multi-node cluster, shared storage."""
    from ray import serve

    from pipeline.runtime import require_shared_storage
    from pipeline.serve.app import build_apps
    from pipeline.tasks import task_names

    tasks = tasks or task_names()
    require_shared_storage({"--registry": registry.root}, shared_storage)
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": settings.request_timeout_s + 5},
                proxy_location=proxy_location)
    serve.run_many(build_apps(registry.root, tasks, settings))
    for name in tasks:
        if registry.production(name) is None:
            log(f"warning: no production model for {name!r} yet; its route answers 503 until one is promoted")
    d = settings.deployment
    log(f"serving {', '.join(tasks)} from {registry.root} on http://{host}:{port} (docs: http://{host}:{port}/docs); "
        f"replicas {d.min_replicas}-{d.max_replicas} per task, batches up to {d.max_batch_size}, "
        f"{d.num_cpus:g} CPU / {d.num_gpus:g} GPU per replica", flush=True)
    return tasks


def serve_foreground(registry: Registry, host: str, port: int, tasks: list[str] | None, settings: ServeSettings,
                     address: str | None = None, proxy_location: str = "HeadOnly", shared_storage: bool = False,
                     log=print) -> None:
    import ray
    from ray import serve

    from pipeline.runtime import init_ray

    started_ray = not ray.is_initialized()
    init_ray(address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        deploy(registry, host, port, tasks, settings, proxy_location, shared_storage, log)
        log("Ctrl-C to stop", flush=True)
        while not stop.is_set():
            time.sleep(0.2)
    finally:
        log("shutting down Serve", flush=True)
        serve.shutdown()
        if started_ray:
            ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, payload: dict, timeout: float = 30.0) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@contextmanager
def local_serve(registry_root: str, tasks: list[str], port: int | None = None) -> Iterator[str]:
    """Every task's application on 127.0.0.1 for the length of a `with` block (the notebooks), in the Ray
    this process is connected to: yields the base URL, shuts Serve down after."""
    serving = StagedLocalServe(registry_root, port or free_port())
    try:
        for name in tasks:
            serving.add(name)
        yield serving.ready(tasks)
    finally:
        serving.stop()


class StagedLocalServe:
    """Serve on 127.0.0.1:`port`, brought up step by step while the caller works on: Serve's controller and
    proxy start at once (in a background thread), `add(task)` deploys a task's application without
    waiting for it (register the task first: its replica loads the production model), `ready(tasks)`
    deploys the gateway, waits until every application runs and returns the base URL; `stop()` shuts
    Serve down. The demo adds each task as soon as it is registered, so the replicas' processes start
    (importing PyTorch) while the next task is evaluated."""

    def __init__(self, registry_root: str, port: int, timeout_s: float = 300.0):
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.serve.settings import load_serve_settings

        self.registry_root, self.port, self.timeout_s, self.settings = registry_root, port, timeout_s, load_serve_settings()
        self.apps: list[str] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="serve")  # one step after another
        self.steps = [self.pool.submit(self._start)]

    def _start(self) -> None:
        from ray import serve

        serve.start(http_options={"host": "127.0.0.1", "port": self.port})

    def _deploy(self, target) -> None:
        from ray import serve

        serve.run_many([target], wait_for_applications_running=False)

    def add(self, task_name: str) -> None:
        from pipeline.serve.app import task_app_name, task_target

        self.apps.append(task_app_name(task_name))
        self.steps.append(self.pool.submit(self._deploy, task_target(task_name, self.registry_root, self.settings)))

    def ready(self, tasks: list[str]) -> str:
        from ray import serve

        from pipeline.serve.app import GATEWAY_APP, gateway_target

        self.apps.append(GATEWAY_APP)
        self.steps.append(self.pool.submit(self._deploy, gateway_target(tasks, self.settings)))
        for step in self.steps:
            step.result()  # re-raises a failed step's error
        deadline = time.monotonic() + self.timeout_s
        while True:
            running = serve.status().applications
            statuses = {name: running.get(name) for name in self.apps}
            failed = {name: app.message for name, app in statuses.items() if app and app.status == "DEPLOY_FAILED"}
            if failed:
                raise RuntimeError(f"Serve could not deploy {', '.join(failed)}: {failed}")
            if all(app and app.status == "RUNNING" for app in statuses.values()):
                return f"http://127.0.0.1:{self.port}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"Serve applications not running after {self.timeout_s:.0f}s: "
                                   f"{ {name: app and app.status for name, app in statuses.items()} }")
            time.sleep(0.2)

    def stop(self) -> None:
        from ray import serve

        self.pool.shutdown(wait=True, cancel_futures=True)
        serve.shutdown()
