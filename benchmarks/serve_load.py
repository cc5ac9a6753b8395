"""HTTP load on the image and text routes: Serve with dynamic batching, Serve without, and the same
Predictor in a plain FastAPI + uvicorn process, side by side in one run.

A bounded load generator (a fixed number of requests per level; `--concurrency` clients, each waiting
for its answer before sending the next) reports requests/s, p50/p99 latency and errors (any non-200).
For a like-for-like comparison every variant runs one model replica (one process) per task, with the
project's Serve defaults otherwise (pipeline/serve/serve.yaml). A third Serve variant runs with Ray's
`RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (gRPC between proxy and replicas, buffered request logs; direct
ingress off, since every task is its own application behind the proxy).

    python benchmarks/serve_load.py                       # trains image + text into a temp registry first
    python benchmarks/serve_load.py --registry DIR        # or uses that registry's production models
    python benchmarks/serve_load.py --requests 200        # quicker

Writes benchmarks/results/serve_load.json and prints the table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROUTES = {"image": "/image/predict", "text": "/text/predict"}
# Serve variants, each in its own Ray instance: (max_batch_size, extra environment for Ray's processes)
THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
VARIANTS = {
    "Serve, batching": (32, {}),
    "Serve, no batching": (1, {}),
    "Serve, batching, throughput-optimized": (32, THROUGHPUT_ENV),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payloads(task: str, n: int) -> list[dict]:
    if task == "image":
        from sklearn.datasets import load_digits

        images = load_digits().images
        return [{"pixels": images[i % len(images)].tolist()} for i in range(n)]
    lines = []
    for path in sorted(glob.glob(str(REPO / "pipeline" / "datasets" / "sentiment" / "*_labelled.txt"))):
        lines += [line.split("\t")[0] for line in Path(path).read_text(errors="replace").splitlines() if "\t" in line]
    return [{"text": lines[i % len(lines)]} for i in range(n)]


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Sends every body once with `concurrency` clients in flight; latency per request, errors = non-200."""
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker():
            nonlocal errors
            for body in queue:
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(bodies), "concurrency": concurrency, "wall_s": round(wall, 3), "rps": round(len(bodies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2), "errors": errors}


def measure(base: str, args, variant: str) -> list[dict]:
    rows = []
    for task, route in ROUTES.items():
        bodies = payloads(task, args.requests)
        asyncio.run(load(base + route, bodies[: min(50, len(bodies))], 4))  # warm-up
        for concurrency in args.concurrency:
            result = {"variant": variant, "task": task, **asyncio.run(load(base + route, bodies, concurrency))}
            print(f"  {variant:<38} {task:<6} c={concurrency:<3} {result['rps']:>8.1f} req/s  p50 {result['p50_ms']:>7.1f} ms  "
                  f"p99 {result['p99_ms']:>7.1f} ms  errors {result['errors']}", flush=True)
            rows.append(result)
    return rows


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def serve_variant(registry, args, name: str) -> list[dict]:
    """Runs one Serve variant in a child process (its own Ray instance, so that Ray's environment
    switches apply to the proxy and replicas) and returns its rows."""
    out = Path(tempfile.mkdtemp(prefix="serve-variant-")) / "rows.json"
    env = {**os.environ, **VARIANTS[name][1]}
    subprocess.run([sys.executable, __file__, "--registry", registry.root, "--requests", str(args.requests),
                    "--concurrency", *map(str, args.concurrency), "--variant", name, "--out", str(out)], env=env, check=True)
    return json.loads(out.read_text())


def run_serve_variant(args) -> None:
    import ray
    from ray import serve

    from pipeline.registry import Registry
    from pipeline.serve.server import deploy
    from pipeline.serve.settings import load_serve_settings

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    port = free_port()
    settings = load_serve_settings(overrides={"deployment.min_replicas": 1, "deployment.max_replicas": 1,
                                              "deployment.max_batch_size": VARIANTS[args.variant][0]})
    deploy(Registry(args.registry), "127.0.0.1", port, list(ROUTES), settings, log=lambda *a, **k: None)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        rows = measure(f"http://127.0.0.1:{port}", args, args.variant)
        import httpx

        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json()["tasks"]
        for row in rows:  # over the whole run of the variant, warm-up included
            row["mean_batch_size"] = health[row["task"]]["mean_batch_size"]
        print(f"  {args.variant}: mean batch size " + ", ".join(f"{t} {h['mean_batch_size']}" for t, h in health.items()), flush=True)
        Path(args.out).write_text(json.dumps(rows))
    finally:
        serve.shutdown()
        ray.shutdown()


def plain_variant(registry, args) -> list[dict]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "plain_server.py"), "--registry", registry.root,
                             "--port", str(port), "--tasks", *ROUTES], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/docs", proc)
        return measure(f"http://127.0.0.1:{port}", args, "plain FastAPI+uvicorn")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def train(registry_root: str) -> None:
    for task in ROUTES:
        print(f"training {task} into {registry_root} ...", flush=True)
        subprocess.run([sys.executable, "-m", "pipeline", "run", task, "--registry", registry_root,
                        "--output", os.path.join(registry_root, "..", f"run-{task}")], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)


def ratios(rows: list[dict], top: int) -> dict:
    def rps(variant, task, c):
        return next(r["rps"] for r in rows if r["variant"] == variant and r["task"] == task and r["concurrency"] == c)

    out = {}
    for task in ROUTES:
        out[task] = {
            f"batched/unbatched at c={top}": round(rps("Serve, batching", task, top) / rps("Serve, no batching", task, top), 2),
            "batched/plain at c=1": round(rps("Serve, batching", task, 1) / rps("plain FastAPI+uvicorn", task, 1), 2),
            f"batched/plain at c={top}": round(rps("Serve, batching", task, top) / rps("plain FastAPI+uvicorn", task, top), 2),
            "throughput-optimized batched/plain at c=1": round(rps("Serve, batching, throughput-optimized", task, 1)
                                                               / rps("plain FastAPI+uvicorn", task, 1), 2),
            f"throughput-optimized batched/plain at c={top}": round(rps("Serve, batching, throughput-optimized", task, top)
                                                                    / rps("plain FastAPI+uvicorn", task, top), 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", help="a registry with production image and text models (default: train them)")
    parser.add_argument("--requests", type=int, default=400, help="requests per route and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)  # one Serve variant (child process)
    args = parser.parse_args()
    if args.variant:
        return run_serve_variant(args)

    import ray

    from pipeline.registry import Registry

    workdir = tempfile.mkdtemp(prefix="serve-load-")
    registry = Registry(args.registry or os.path.join(workdir, "registry"))
    if not args.registry:
        train(registry.root)
    rows = []
    for name in VARIANTS:
        rows += serve_variant(registry, args, name)
    rows += plain_variant(registry, args)
    top = max(args.concurrency)
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, Ray {ray.__version__}",
               "date": time.strftime("%Y-%m-%d"), "requests_per_level": args.requests, "results": rows, "ratios": ratios(rows, top)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print("\n| variant | route | concurrency | req/s | p50 ms | p99 ms | errors |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {ROUTES[r['task']]} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    print("\nratios:", json.dumps(summary["ratios"], indent=2))


if __name__ == "__main__":
    main()
