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


def start_local_serve(port: int) -> None:
    """Serve's controller and its HTTP proxy on 127.0.0.1:`port`, no application yet."""
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})


@contextmanager
def local_serve(registry_root: str, tasks: list[str], port: int | None = None, started: bool = False) -> Iterator[str]:
    """Every task's application on 127.0.0.1 for the length of a `with` block (the demo's HTTP check, the
    notebooks), in the Ray this process is connected to: yields the base URL, shuts Serve down after.
    `started`: `start_local_serve(port)` already ran (the demo starts Serve while it trains)."""
    from ray import serve

    from pipeline.serve.app import build_apps

    port = port or free_port()
    try:
        if not started:
            start_local_serve(port)
        serve.run_many(build_apps(registry_root, tasks))
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
