"""`pipeline demo`: every task end to end on its embedded data, then one HTTP request per task.

The tasks' data stages run first, then every task's model candidates train in one Ray Train run (one
worker group, started once: its start-up costs about 20 s on two cores, once instead of once per task),
then each task is evaluated and registered as `pipeline run` would. The candidates train side by side,
each on one worker that stands in for every data-parallel rank (`train.data_parallel: false`): the
models DDP would train, without an all-reduce per step that costs small models more than it buys."""

from __future__ import annotations

import dataclasses
import json
import time

from pipeline import storage
from pipeline.flow import finish_run, new_run_id, plan_run
from pipeline.registry import Registry
from pipeline.runtime import init_ray, require_shared_storage
from pipeline.serve.server import StagedLocalServe, free_port, post_json
from pipeline.tasks import get_task, load_config, task_names
from pipeline.timing import Timings


def run_demo(args) -> int:
    from pipeline.train.trainer import fit_candidates, training_span

    started = time.perf_counter()
    tasks = args.tasks or task_names()
    registry = Registry(args.registry)
    output = storage.resolve(args.output)  # Ray Train takes absolute paths or URIs only
    init_ray(args.address, verbose=args.verbose)
    ray_start = time.perf_counter() - started
    require_shared_storage({"--output": args.output, "--registry": registry.root}, args.shared_storage)
    plans, planned_at = [], []
    for name in tasks:
        overrides = {"train.num_workers": args.num_workers} if args.num_workers else {}
        if not args.no_pack:  # nine small models on a few workers: side by side beats the all-reduce
            overrides["train.data_parallel"] = False
        plans.append(plan_run(load_config(name, overrides=overrides), storage.join(output, name), registry, timings=Timings()))
        planned_at.append(time.perf_counter())

    # One training run for every task: candidates are named by their labels, unique across tasks.
    candidates = [dataclasses.replace(c, name=c.label) for plan in plans for c in plan.planned]
    print(f"\n[demo] training {len(candidates)} model candidates of {len(plans)} tasks in one Ray Train run", flush=True)
    fitted = fit_candidates(candidates, storage.join(output, "checkpoints"), new_run_id("demo")) if candidates else None
    outcomes = fitted.outcomes if fitted else {}

    # The HTTP check comes up while the driver evaluates (one core): Serve starts now, each task's
    # application as soon as that task is registered.
    serving = None if args.no_serve else StagedLocalServe(registry.root, args.port or free_port())
    http_check = 0.0
    try:
        summary = []
        for plan, ended in zip(plans, planned_at):
            own = {c.name: outcomes[c.label] for c in plan.planned}
            training = training_span(list(own.values()))
            plan.timings.add("training", training)
            plan.timings.away(time.perf_counter() - ended - training)  # other tasks' stages and training
            metrics = finish_run(plan, own)
            shown = {k: v for k, v in metrics["test"].items() if isinstance(v, float)}
            summary.append((plan, metrics["run_id"], shown, plan.timings.elapsed()))
            if serving:
                serving.add(plan.task.name)

        http_started = time.perf_counter()
        if serving:
            send_examples(serving.ready(tasks), tasks)
        http_check = time.perf_counter() - http_started
    finally:
        if serving:
            serving.stop()

    print("\ndemo summary")
    for plan, run_id, shown, seconds in summary:
        print(f"  {plan.task.name:<12} {run_id:<36} " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()) + f"  ({seconds:.0f}s)")
    if fitted:
        phases = fitted.phases
        print(f"  shared training run: worker start-up {phases.get('train_startup', 0):.0f}s, training "
              f"{phases.get('training', 0):.0f}s, shutdown {phases.get('train_shutdown', 0):.0f}s (each task's own "
              "training time is in its line; candidates of two tasks that train alone side by side count in both)")
    print(f"  ray start: {ray_start:.0f}s" + ("" if args.no_serve else f", HTTP check (after the last registration: the last "
                                                                      f"deployments, one request per task, Serve shutdown): {http_check:.0f}s"))
    print(f"  registry: {registry.root}")
    print(f"  total wall time: {time.perf_counter() - started:.0f}s")
    return 0


def send_examples(base: str, tasks: list[str]) -> None:
    """Sends each task's example request to the Serve at `base` and prints the answer."""
    for name in tasks:
        task = get_task(name)
        example, expected = task.example_request()
        answer = post_json(f"{base}/{name}/{task.route}", example)
        print(f"[{name}] POST /{name}/{task.route} -> {json.dumps(answer)[:300]}"
              + (f"  (expected {expected})" if expected is not None else ""))
