"""`pipeline demo`: every task end to end on its embedded data, then one HTTP request per task."""

from __future__ import annotations

import json
import time

from pipeline import storage
from pipeline.flow import run_pipeline
from pipeline.registry import Registry
from pipeline.runtime import init_ray, require_shared_storage
from pipeline.serve.server import free_port, local_serve, post_json
from pipeline.tasks import get_task, load_config, task_names


def run_demo(args) -> int:
    started = time.perf_counter()
    tasks = args.tasks or task_names()
    registry = Registry(args.registry)
    init_ray(args.address, verbose=args.verbose)
    require_shared_storage({"--output": args.output, "--registry": registry.root}, args.shared_storage)
    summary = []
    for name in tasks:
        overrides = {"train.num_workers": args.num_workers} if args.num_workers else {}
        cfg = load_config(name, overrides=overrides)
        task_started = time.perf_counter()
        metrics = run_pipeline(cfg, storage.join(args.output, name), registry)
        shown = {k: v for k, v in metrics["test"].items() if isinstance(v, float)}
        summary.append((name, metrics["run_id"], shown, time.perf_counter() - task_started))

    if not args.no_serve:
        check_http(registry, tasks, args.port or free_port())

    print("\ndemo summary")
    for name, run_id, shown, seconds in summary:
        print(f"  {name:<12} {run_id:<36} " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()) + f"  ({seconds:.0f}s)")
    print(f"  registry: {registry.root}")
    print(f"  total wall time: {time.perf_counter() - started:.0f}s")
    return 0


def check_http(registry: Registry, tasks: list[str], port: int) -> None:
    """Starts Serve on 127.0.0.1, sends each task's example request, prints the answer, stops Serve."""
    with local_serve(registry.root, tasks, port) as base:
        for name in tasks:
            task = get_task(name)
            example, expected = task.example_request()
            answer = post_json(f"{base}/{name}/{task.route}", example)
            print(f"[{name}] POST /{name}/{task.route} -> {json.dumps(answer)[:300]}"
                  + (f"  (expected {expected})" if expected is not None else ""))
