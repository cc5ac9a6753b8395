"""Starting the Serve app: `pipeline serve` (foreground; SIGINT/SIGTERM shut it down cleanly) and
`jobs/deploy.py` (deploys onto a cluster and leaves it running)."""

from __future__ import annotations

import signal
import threading
import time

from pipeline.registry import Registry


def deploy(registry: Registry, host: str, port: int, tasks: list[str] | None = None, reload_interval_s: float = 5.0,
           replica_cpus: float = 0.0, proxy_location: str = "HeadOnly", shared_storage: bool = False, log=print) -> list[str]:
    """Deploys the app (Ray must be initialised) and returns the tasks it serves. The registry must be
    reachable from every node that may host a replica: on a multi-node cluster, shared storage."""
    from ray import serve

    from pipeline.runtime import require_shared_storage
    from pipeline.serve.app import build_app
    from pipeline.tasks import task_names

    tasks = tasks or task_names()
    require_shared_storage({"--registry": registry.root}, shared_storage)
    serve.start(http_options={"host": host, "port": port}, proxy_location=proxy_location)
    serve.run(build_app(registry.root, tasks, reload_interval_s, replica_cpus), name="pipeline", route_prefix="/")
    for name in tasks:
        if registry.production(name) is None:
            log(f"warning: no production model for {name!r} yet; its route answers 503 until one is promoted")
    log(f"serving {', '.join(tasks)} from {registry.root} on http://{host}:{port} (docs: http://{host}:{port}/docs)", flush=True)
    return tasks


def serve_foreground(registry: Registry, host: str, port: int, tasks: list[str] | None = None,
                     address: str | None = None, reload_interval_s: float = 5.0, replica_cpus: float = 0.0,
                     proxy_location: str = "HeadOnly", shared_storage: bool = False, log=print) -> None:
    import ray
    from ray import serve

    from pipeline.runtime import init_ray

    started_ray = not ray.is_initialized()
    init_ray(address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        deploy(registry, host, port, tasks, reload_interval_s, replica_cpus, proxy_location, shared_storage, log)
        log("Ctrl-C to stop", flush=True)
        while not stop.is_set():
            time.sleep(0.2)
    finally:
        log("shutting down Serve", flush=True)
        serve.shutdown()
        if started_ray:
            ray.shutdown()
