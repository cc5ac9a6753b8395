"""`pipeline serve`: run the Serve app in the foreground; SIGINT/SIGTERM shut it down cleanly."""

from __future__ import annotations

import signal
import threading
import time

from pipeline.registry import Registry


def serve_foreground(registry: Registry, host: str, port: int, tasks: list[str] | None = None,
                     address: str | None = None, reload_interval_s: float = 5.0, replica_cpus: float = 0.0,
                     log=print) -> None:
    import ray
    from ray import serve

    from pipeline.runtime import init_ray
    from pipeline.serve.app import build_app
    from pipeline.tasks import task_names

    tasks = tasks or task_names()
    started_ray = not ray.is_initialized()
    init_ray(address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(registry.root, tasks, reload_interval_s, replica_cpus), name="pipeline", route_prefix="/")
        for name in tasks:
            if registry.production(name) is None:
                log(f"warning: no production model for {name!r} yet; its route answers 503 until one is promoted")
        log(f"serving {', '.join(tasks)} from {registry.root} on http://{host}:{port} "
            f"(docs: http://{host}:{port}/docs); Ctrl-C to stop", flush=True)
        while not stop.is_set():
            time.sleep(0.2)
    finally:
        log("shutting down Serve", flush=True)
        serve.shutdown()
        if started_ray:
            ray.shutdown()
