"""Does data parallelism pay on this machine's CPU? Each model the demo trains, stepped on its own training
rows in four set-ups, from the same process tree one after another:

- one process (one thread, as a training worker runs);
- two independent processes, each stepping its own copy: what two workers could give at best here, so
  the gap to twice one process is the cores' contention (shared caches, memory bandwidth, other processes);
- two DDP processes (gloo, as Ray Train's CPU workers): each steps its batch and all-reduces gradients;
- two independent processes, each standing in for both DDP ranks: how `train.data_parallel: false`
  candidates train (a step accumulates the gradients of two batches, one per rank, then updates once),
  two models side by side.

The models, configs, preprocessors and rows are the pipeline's own: every task is planned as `pipeline
demo` plans it (data stages and features on Ray Data), its trained candidates built by the task plug-in
and stepped by the loop's step (augment, forward, loss, backward, the loop's fused optimizer) on
batches of the candidate's `train.batch_size` rows. Ray Train is left out on purpose:
`benchmarks/train_loop.py` measures its cost over the same loop (about 1.0x); this one measures what
the second worker buys.

    python benchmarks/data_parallel_cpu.py                 # every task
    python benchmarks/data_parallel_cpu.py --tasks text    # some of them

Reported per model: milliseconds per step (the median of `--rounds` runs of each set-up, interleaved),
rows per second of each set-up, and three ratios against one process: two independent processes (the most two workers can give here), two DDP workers, and two processes each standing in for both ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plan_models(tasks: list[str]) -> list[dict]:
    """Every trained candidate of the tasks as the demo plans it: label, config, preprocessor, training rows."""
    from pipeline.flow import feature_arrays, plan_run
    from pipeline.registry import Registry
    from pipeline.runtime import init_ray
    from pipeline.tasks import load_config

    import ray

    init_ray()
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tasks:
            plan = plan_run(load_config(name), f"{tmp}/runs/{name}", Registry(f"{tmp}/registry"), log=lambda _: None)
            for c in plan.planned:
                models.append({"label": c.label, "config": c.cfg.to_dict(), "preprocessor": c.preprocessor_state,
                               "train": feature_arrays(c.datasets["train"])})
    ray.shutdown()
    return models


def step_times(models: list[dict], rank: int, ddp: bool, warmup: int, steps: int, parts: int = 1) -> list[float]:
    """Milliseconds per step of each model on this process (`rank` seeds its batch order); a step of
    `parts` batches of the candidate's batch size accumulates their gradients (as a worker standing in
    for `parts` ranks does), then updates once."""
    import numpy as np
    import torch

    from pipeline.data.features import load_preprocessor
    from pipeline.tasks import config_from_dict, get_task
    from pipeline.train.loop import make_optimizer, train_step

    torch.set_num_threads(1)
    out = []
    for m in models:
        cfg = config_from_dict(m["config"])
        task = get_task(cfg.task)
        torch.manual_seed(cfg.seed)
        model = task.build_model(cfg, load_preprocessor(m["preprocessor"]))
        if ddp:
            model = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = make_optimizer(model.parameters(), cfg.train)
        rows = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in m["train"].items()}
        n, size = len(next(iter(rows.values()))), cfg.train.batch_size
        order = torch.randperm(n, generator=torch.Generator().manual_seed(rank))
        model.train()
        started = 0.0
        for step in range(warmup + steps):
            if step == warmup:
                started = time.perf_counter()
            starts = [((step * parts + part) * size) % max(n - size, 1) for part in range(parts)]
            train_step(task, cfg, model, optimizer, [{k: v[order[s:s + size]] for k, v in rows.items()} for s in starts])
        out.append((time.perf_counter() - started) / steps * 1000)
    return out


def worker(rank: int, world: int, ddp: bool, port: int, models: list[dict], warmup: int, steps: int, parts: int, results) -> None:
    if ddp:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    results[rank] = step_times(models, rank, ddp, warmup, steps, parts)
    if ddp:
        dist.destroy_process_group()


def measure(models: list[dict], world: int, ddp: bool, warmup: int, steps: int, parts: int = 1) -> list[float]:
    """Each model's ms per step, averaged over the processes that stepped it at once."""
    import torch.multiprocessing as mp

    from pipeline.serve.server import free_port

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(world, ddp, free_port(), models, warmup, steps, parts, results), nprocs=world, join=True)
        per_rank = [results[r] for r in range(world)]
    return [sum(times) / world for times in zip(*per_rank)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["image", "tabular", "text", "recommender"])
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing, per model")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per model")
    parser.add_argument("--rounds", type=int, default=3, help="each set-up's runs; the median is reported")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_parallel_cpu.json"))
    args = parser.parse_args()

    print(f"planning {', '.join(args.tasks)} (data stages on Ray Data) ...", flush=True)
    models = plan_models(args.tasks)
    # name: (processes, DDP, batches per step)
    setups = {"one process": (1, False, 1), "two independent processes": (2, False, 1), "two DDP workers": (2, True, 1),
              "two alone, each for both ranks": (2, False, 2)}
    rounds: dict[str, list[list[float]]] = {name: [] for name in setups}
    for round_ in range(args.rounds):  # set-ups interleaved, so a slow spell of the machine hits all of them
        for name, (world, ddp, parts) in setups.items():
            print(f"round {round_ + 1}/{args.rounds}, {name}: {len(models)} models, {args.steps} steps each ...", flush=True)
            rounds[name].append(measure(models, world, ddp, args.warmup, args.steps, parts))
    times = {name: [statistics.median(per_model) for per_model in zip(*r)] for name, r in rounds.items()}

    results = []
    for i, m in enumerate(models):
        batch = m["config"]["train"]["batch_size"]
        ms = {name: times[name][i] for name in setups}
        rows_per_s = {name: setups[name][0] * setups[name][2] * batch / (ms[name] / 1000) for name in setups}
        one = rows_per_s["one process"]
        results.append({"model": m["label"], "batch_size": batch, "ms_per_step": ms, "rows_per_s": rows_per_s,
                        "independent_over_one": rows_per_s["two independent processes"] / one,
                        "ddp_over_one": rows_per_s["two DDP workers"] / one,
                        "alone_over_one": rows_per_s["two alone, each for both ranks"] / one})
        print(f"  {m['label']:<32} batch {batch:>5}  " + "  ".join(f"{n}: {v:6.1f} ms" for n, v in ms.items())
              + f"  -> 2 DDP workers {results[-1]['ddp_over_one']:.2f}x, 2 alone {results[-1]['alone_over_one']:.2f}x one process", flush=True)
    out = {"command": "python benchmarks/data_parallel_cpu.py" + (f" --tasks {' '.join(args.tasks)}" if args.tasks != parser.get_default("tasks") else ""),
           "cpus": os.cpu_count(), "steps": args.steps, "rounds": args.rounds, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
