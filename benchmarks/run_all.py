"""`make bench`: every benchmark, one after another (one load at a time, each under a time limit), then
benchmarks/RESULTS.md rewritten from their JSON results with the date, the machine, the commands and
the ratios.

    python benchmarks/run_all.py                     # everything (about 20 minutes on 2 cores)
    python benchmarks/run_all.py --only train_loop   # some of them; the others' last results are reused
    python benchmarks/run_all.py --render            # only rewrite RESULTS.md from benchmarks/results/

A benchmark that fails or runs past its limit keeps its previous result (RESULTS.md says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PY = sys.executable


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def benchmarks(rows: str) -> dict[str, dict]:
    """name -> the command that runs it, its time limit and the JSON it writes."""
    out = {
        "data_stages": {"cmd": [PY, "benchmarks/data_stages.py", "--rows", rows], "limit_s": 1800},
        "train_loop": {"cmd": [PY, "benchmarks/train_loop.py"], "limit_s": 600},
        "data_parallel_cpu": {"cmd": [PY, "benchmarks/data_parallel_cpu.py"], "limit_s": 600},
        "serve_load": {"cmd": [PY, "benchmarks/serve_load.py", "--requests", "200"], "limit_s": 1200},
        "tune_asha_vs_grid": {"cmd": [PY, "benchmarks/tune_asha_vs_grid.py"], "limit_s": 900},
        "csv_reader": {"cmd": [PY, "benchmarks/csv_reader.py"], "limit_s": 600},
        "image_cv": {"cmd": [PY, "benchmarks/image_cv.py"], "limit_s": 900},
        "demo": {"cmd": [PY, "benchmarks/run_all.py", "--demo-child"], "limit_s": 900},
    }
    if gpu_available():
        out["train_loop_gpu"] = {"cmd": [PY, "benchmarks/train_loop.py", "--use-gpu"], "limit_s": 600}
    return out


def run_demo() -> None:
    """`pipeline demo` in a fresh folder, timed: wall seconds and each task's, as results/demo.json."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc = subprocess.run([PY, "-m", "pipeline", "demo", "--output", f"{tmp}/runs", "--registry", f"{tmp}/registry"],
                              cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"pipeline demo failed:\n{proc.stderr[-3000:]}")
    tasks = {m.group(1): {"metrics": m.group(2).strip(), "seconds": float(m.group(3))}
             for m in re.finditer(r"^  (\w+)\s+\S+\s+(.*?)\((\d+)s\)$", proc.stdout, re.M)}
    summary = re.search(r"total wall time: (\d+)s", proc.stdout)
    shared = re.search(r"shared training run: worker start-up (\d+)s, training (\d+)s, shutdown (\d+)s", proc.stdout)
    fixed = re.search(r"ray start: (\d+)s, HTTP check .*: (\d+)s", proc.stdout)
    (RESULTS / "demo.json").write_text(json.dumps({
        "command": "python -m pipeline demo", "wall_s": round(wall, 1),
        "summary_s": float(summary.group(1)) if summary else None, "tasks": tasks,
        "shared_training": dict(zip(("startup_s", "training_s", "shutdown_s"), map(float, shared.groups()))) if shared else None,
        **(dict(zip(("ray_start_s", "http_check_s"), map(float, fixed.groups()))) if fixed else {}),
    }, indent=2) + "\n")


def machine() -> str:
    import ray
    import torch

    cpus = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {cpus} cores, {memory:.0f} GiB, {device}; Python {platform.python_version()}, "
            f"Ray {ray.__version__}, PyTorch {torch.__version__}")


# --- RESULTS.md -----------------------------------------------------------------------------------

def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows], ""]


def num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def measured_on(d: dict) -> list[str]:
    """Results copied from another machine (the GPU machine's) say where and when they were measured."""
    return [f"Measured on {d['measured_on']}.", ""] if d.get("measured_on") else []


def section_train_loop(d: dict, title: str) -> list[str]:
    rows = [[r["loop"], num(r["steady_epoch_s"]), f"{r['rows_per_s']:,.0f}", num(r["first_epoch_s"]), num(r["wall_s"], 1)]
            for r in d["results"]]
    loop = d.get("loop_steady_throughput_ratio")
    return [f"## {title}", "", *measured_on(d), f"`{d['command']}`: the image CNN, {d['rows']:,} synthetic 32x32x3 training rows, batch "
            f"{d['batch_size']}, {d['epochs']} epochs, {d['precision']}, on {d['device']}. Ray Train runs the pipeline's own "
            "`fit_candidates()` (data from Ray Data); the bare loop has the data in memory. Steady state: the median of "
            "epochs 2 on (training + validation).", "",
            *table(["loop", "steady-state epoch (s)", "rows/s", "first epoch (s)", "wall (s)"], rows),
            f"Ray Train / bare: **{d['steady_throughput_ratio']:.2f}x** the steady-state throughput (goal: at least "
            f"{'0.9' if d['device'].startswith('CPU') else '0.95'}x), first epoch **{d['first_epoch_ratio']:.2f}x** the time (goal: "
            f"within 2x), wall **{d['wall_ratio']:.2f}x** (Ray Train's worker start-up and shutdown are a fixed cost)."
            + (f" The pipeline's own loop in-process, without Ray Train: **{loop:.2f}x** the bare loop's throughput." if loop else ""),
            ""]


def section_data_parallel(d: dict) -> list[str]:
    setups = list(d["results"][0]["ms_per_step"])
    alone = "alone_over_one" in d["results"][0]
    rows = [[r["model"], r["batch_size"], *[num(r["ms_per_step"][s], 1) for s in setups],
             f"{r['independent_over_one']:.2f}x", f"**{r['ddp_over_one']:.2f}x**", *([f"**{r['alone_over_one']:.2f}x**"] if alone else [])]
            for r in d["results"]]
    return ["## Data parallelism on this CPU: one process vs two (independent, DDP, alone)", "",
            f"`{d['command']}`: each model the demo trains, on its own training rows and batch size, {d['steps']} timed steps "
            f"per set-up, the median of {d.get('rounds', 1)} interleaved rounds ({d['cpus']} CPUs, one thread per process). Two independent processes show what two workers can "
            "give here at best; two DDP workers (gloo) add the gradient all-reduce every step"
            + ("; two alone, each standing in for both ranks (two batches a step, gradients accumulated), are how "
               "`train.data_parallel: false` candidates train, side by side." if alone else "."), "",
            *table(["model", "batch", *[f"{s}: ms/step" for s in setups], "rows/s: 2 independent / 1", "rows/s: 2 DDP / 1",
                    *(["rows/s: 2 alone / 1"] if alone else [])], rows)]


def section_data_stages(d: dict, title: str = "Data stages: Ray Data vs pandas (ingest, clean, features)") -> list[str]:
    rows = []
    for size in d["sizes"]:
        for r in size["results"]:
            cleaned = "" if r["engine"] == "pandas" else "streamed" if r.get("streamed") else "in memory"  # runs before streaming: in memory
            rows.append([f"{size['rows']:,}", r["engine"], cleaned, num(r["seconds"], 1), num(r.get("startup_seconds"), 1),
                         f"{r['rows_per_second']:,.0f}", f"{r['peak_memory_mb']:,.0f}"])
    ratios = [[f"{s['rows']:,}", f"{s['ray_over_pandas_throughput']:.2f}x", f"{s['ray_over_pandas_peak_memory']:.2f}x"] for s in d["sizes"]]
    growth = d.get("peak_memory_growth", {})
    streaming = any("streamed" in r for size in d["sizes"] for r in size["results"])
    return [f"## {title}", "", *measured_on(d),
            f"`python benchmarks/data_stages.py --rows {','.join(str(s['rows']) for s in d['sizes'])}`: generated Adult-like CSVs "
            f"with dirty rows, the same stages in both engines, each in its own process ({d['cpus']} CPUs). "
            + ("Ray Data keeps the cleaned rows in memory for a source up to `data.stream_above_mb` (256 MiB), and streams "
               "a larger one through cleaning, reading it again for the quarantine and the transform." if streaming
               else "Ray Data kept the cleaned rows in memory at every size (measured before cleaning could stream).")
            + (" Ray starts as `pipeline data` starts it, without its dashboard." if d.get("ray_dashboard") is False else ""), "",
            *table(["rows", "engine", "cleaned rows", "seconds", "of which start-up", "rows/s", "peak memory (MiB)"], rows),
            *table(["rows", "Ray Data / pandas throughput", "Ray Data / pandas peak memory"], ratios),
            f"Peak memory growth over {d.get('rows_growth', 0):,.0f}x the rows: pandas {growth.get('pandas', 0):.1f}x, "
            f"Ray Data {growth.get('ray', 0):.1f}x (goals for Ray Data: memory nearly flat; at least 0.8x pandas' throughput at 1M "
            "rows on 2 cores, 3x at 10M rows on 16 cores).", ""]


def section_serve(d: dict) -> list[str]:
    rows = [[r["variant"], f"/{r['task']}/predict", r["concurrency"], num(r["rps"], 1), num(r["p50_ms"], 1), num(r["p99_ms"], 1),
             r["errors"], num(r.get("mean_batch_size"))] for r in d["results"]]
    tasks = list(d["ratios"])
    names = list(d["ratios"][tasks[0]])
    ratios = [[name, *[f"{d['ratios'][t][name]:.2f}x" for t in tasks]] for name in names]
    return ["## Serving: Serve batched vs unbatched vs a plain FastAPI process", "",
            f"`python benchmarks/serve_load.py --requests {d['requests_per_level']}`: a bounded load generator "
            "(keep-alive clients, each sending its next request when the previous one answered) against the image and "
            "text routes of each server in turn, one replica per task. Errors: any answer but 200.", "",
            *table(["variant", "route", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "mean batch"], rows),
            *table(["ratio (req/s)", *tasks], ratios)]


def section_tune(d: dict) -> list[str]:
    rows = [[name, r["trials"], r["trial_epochs"], num(r["best_val_accuracy"], 4), num(r["test_accuracy_of_best"], 4), num(r["wall_seconds"], 1)]
            for name, r in (("grid (FIFO)", d["grid"]), ("ASHA", d["asha"]))]
    return ["## Tuning: ASHA vs a full grid (image workload)", "",
            f"`python benchmarks/tune_asha_vs_grid.py`: the same 16-point grid of learning rates and schedules, "
            f"{d['epochs_per_trial']} epochs per trial, {d['max_concurrent']} trials at a time.", "",
            *table(["search", "trials", "trial-epochs", "best val accuracy", "its test accuracy", "wall (s)"], rows),
            f"ASHA / grid: **{d['trial_epochs_ratio']:.2f}x** the trial-epochs, **{d['wall_time_ratio']:.2f}x** the wall time, "
            f"best validation accuracy {d['accuracy_gap_points']:+.2f} points.", ""]


def section_csv(d: dict) -> list[str]:
    rows = []
    for name, f in d["files"].items():
        for variant, r in f["variants"].items():
            rows.append([name, variant, "error" if "error" in r else num(r["seconds"]), "—" if "error" in r else f"{r['records']:,}",
                         "—" if "error" in r else f"{r.get('malformed', 0):,}", "—" if "error" in r else num(r.get("time_vs_pipeline"))])
    return ["## CSV reader: one record per line vs pyarrow vs Python's csv", "",
            f"`python benchmarks/csv_reader.py`: {d['rows']:,} rows, with stray quotes on {d['stray_quote_lines']} lines.", "",
            *table(["file", "reader", "seconds", "records", "malformed", "time vs the pipeline's"], rows)]


def section_image_cv(d: dict) -> list[str]:
    rows = [[name, ", ".join(f"`{k}={json.dumps(v)}`" for k, v in r["overrides"].items()) or "the reference design's CNN",
             f"{r['mean']:.4f}", f"{r['std']:.4f}", " ".join(f"{a:.4f}" for a in r["fold_accuracy"])]
            for name, r in sorted(d["variants"].items(), key=lambda kv: -kv[1]["mean"])]
    return ["## Image model choice: k-fold cross-validation on train + val", "",
            f"`python benchmarks/image_cv.py`: {d['folds']} folds over the {d['rows']:,} train + val digits (the test split "
            "is not read); each variant trains once per fold, keeping its best held-out epoch.", "",
            *table(["variant", "overrides (over channels [32, 64, 64], dense 64)", "mean accuracy", "spread", "folds"], rows)]


def section_demo(d: dict) -> list[str]:
    rows = [[task, t["seconds"], t["metrics"]] for task, t in d["tasks"].items()]
    shared = d.get("shared_training")
    note = ([f"Every task's candidates train in one Ray Train run: its worker start-up ({shared['startup_s']:.0f} s) and "
             f"shutdown ({shared['shutdown_s']:.0f} s) are paid once and are in no task's seconds; each task's own "
             "training time is."] if shared else [])
    if "ray_start_s" in d:
        note.append(f"Besides the tasks: Ray's start-up {d['ray_start_s']:.0f} s, the HTTP check after the last registration (the "
                    f"last deployments, one request per task, Serve's shutdown) {d['http_check_s']:.0f} s.")
    return ["## `pipeline demo`", "", f"`{d['command']}` in a fresh folder: **{d['wall_s']:.0f} s** wall (its own summary: "
            f"{d['summary_s']:.0f} s), every task trained, evaluated, registered and queried over HTTP.", "",
            *table(["task", "seconds", "test metrics"], rows), *note]


def result_time(path: Path) -> float:
    """When a result was measured: its file's modification time while it differs from the last commit (a
    run just now), else the time of the commit that last changed it (a clone gives every file the clone's time)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args, "--", str(path)], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    committed = git("log", "-1", "--format=%ct")
    if committed and not git("status", "--porcelain"):
        return float(committed)
    return path.stat().st_mtime


def render(status: dict[str, str]) -> str:
    def load(name: str):
        path = RESULTS / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    lines = ["# Benchmark results", "",
             f"Rendered by `make bench` (`python benchmarks/run_all.py`) on {time.strftime('%Y-%m-%d')}, {machine()}, from the "
             "latest result of each benchmark (`benchmarks/results/*.json`; when each was measured, as below: a result not yet "
             "committed by its file's modification time, a committed one by its commit's). Each benchmark compares its variants side by side in one run and reports ratios; one benchmark runs at a "
             "time. Notes on what the numbers mean and how they moved: `benchmarks/NOTES.md`.", ""]
    measured = {p.stem: time.strftime("%Y-%m-%d %H:%M", time.localtime(result_time(p))) for p in sorted(RESULTS.glob("*.json"))}
    lines += table(["benchmark", "result from", "this run"], [[name, measured.get(name, "never"), status.get(name, "not run")]
                                                              for name in sorted(set(measured) | set(status))])
    sections = [("train_loop", lambda d: section_train_loop(d, "Training loop: Ray Train vs a bare PyTorch loop (CPU)")),
                ("train_loop_gpu", lambda d: section_train_loop(d, "Training loop: Ray Train vs a bare PyTorch loop (GPU)")),
                ("data_parallel_cpu", section_data_parallel), ("data_stages", section_data_stages),
                ("data_stages_gpu_machine", lambda d: section_data_stages(d, "Data stages on the GPU machine's 16 cores")),
                ("serve_load", section_serve), ("tune_asha_vs_grid", section_tune),
                ("csv_reader", section_csv), ("image_cv", section_image_cv), ("demo", section_demo)]
    for name, make in sections:
        data = load(name)
        if data is None:
            hint = (f" (no GPU). On a GPU machine: `bash benchmarks/gpu_checks.sh`, then copy its `{name}.json` into "
                    "`benchmarks/results/`." if "gpu" in name else ".")
            lines += [f"## {name}", "", f"Not measured on this machine{hint}", ""]
        else:
            lines += make(data)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark and rewrite benchmarks/RESULTS.md")
    parser.add_argument("--only", nargs="+", help="run these benchmarks only (the rest keep their last results)")
    parser.add_argument("--rows", default="100000,1000000,10000000", help="data_stages' scale curve (rows per size)")
    parser.add_argument("--render", action="store_true", help="run nothing; rewrite RESULTS.md from the results")
    parser.add_argument("--demo-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.demo_child:
        run_demo()
        return 0
    status: dict[str, str] = {}
    if not args.render:
        for name, bench in benchmarks(args.rows).items():
            if args.only and name not in args.only:
                continue
            print(f"[bench] {name}: {' '.join(bench['cmd'][1:])} (limit {bench['limit_s']} s)", flush=True)
            started = time.perf_counter()
            try:
                proc = subprocess.run(bench["cmd"], cwd=REPO, timeout=bench["limit_s"], capture_output=True, text=True)
                ok = proc.returncode == 0
                state = f"ran in {time.perf_counter() - started:.0f} s" if ok else f"failed (exit {proc.returncode}); last result kept"
                if not ok:
                    print(proc.stderr[-2000:], file=sys.stderr)
            except subprocess.TimeoutExpired:
                state = f"stopped at its {bench['limit_s']} s limit; last result kept"
            status[name] = state
            print(f"[bench] {name}: {state}", flush=True)
    (REPO / "benchmarks" / "RESULTS.md").write_text(render(status))
    print("[bench] wrote benchmarks/RESULTS.md")
    return 0 if all(s.startswith("ran") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
