"""Ingest + clean + features on generated Adult-like CSVs of growing size: Ray Data vs plain pandas.

Both engines run the same pipeline code (the same cleaning steps and feature statistics from
`pipeline.data`); only the execution differs: Ray Data streams blocks through tasks on every core,
pandas holds the whole table in one process. Each engine runs in its own child process, whose peak
memory (PSS summed over it and its descendants, e.g. Ray's workers: shared pages counted once) is
sampled every 0.2 s.

    python benchmarks/data_stages.py                          # 100k and 1M rows -> benchmarks/results/data_stages.json
    python benchmarks/data_stages.py --rows 100000,1000000,10000000   # the scale curve (10M: ~1 GiB CSV, generated, then deleted)
    python benchmarks/data_stages.py --rows 200000            # one size, quicker
    python benchmarks/data_stages.py --stream-above-mb 0      # Ray Data streams cleaning at every size
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.tasks import config_from_dict, default_config, load_config  # noqa: E402


SAMPLE_SHARE = 20  # memory sampling sleeps 20x as long as a sample took: at most 5% of one core
CHUNK_ROWS = 1_000_000  # generated a chunk per process and written in order: a 10M-row file never sits in memory


def adult_config(csv: str, stream_above_mb: float | None = None):
    """The tabular defaults with Adult's description (its columns, types and missing-value marker) over
    the generated CSV: `load_config` drops that description for any source but the embedded one."""
    raw = default_config("tabular", embedded=True)
    raw["task"] = "tabular"
    raw["data"].update(source=csv, test_source=None)
    if stream_above_mb is not None:
        raw["data"]["stream_above_mb"] = stream_above_mb
    return config_from_dict(raw)


def generate_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Adult's real rows resampled to `rows`, with ~1% missing values, out-of-range ages, bad
    numbers and malformed lines mixed in, so every cleaning rule has work to do. Chunks are generated
    on every core (each from its own seed, so the file does not depend on the core count)."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = [(min(CHUNK_ROWS, rows - start), seed + i) for i, start in enumerate(range(0, rows, CHUNK_ROWS))]
    with open(path, "w") as out:
        if len(chunks) == 1:  # no pool for a small file: nothing to parallelise
            out.write(generate_chunk(*chunks[0]))
            return
        with ProcessPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
            for text in pool.map(generate_chunk, *zip(*chunks)):
                out.write(text)


@functools.cache
def adult_rows() -> pd.DataFrame:
    names = load_config("tabular").data.options.column_names
    with gzip.open(REPO / "pipeline" / "datasets" / "adult" / "adult.data.gz", "rt") as fh:
        return pd.read_csv(fh, header=None, names=names, dtype=str, skipinitialspace=True).dropna()


def generate_chunk(rows: int, seed: int) -> str:
    adult = adult_rows()
    rng = np.random.default_rng(seed)
    frame = adult.iloc[rng.integers(0, len(adult), rows)].reset_index(drop=True)
    frame["fnlwgt"] = (frame["fnlwgt"].astype(int) + rng.integers(-500, 500, rows)).astype(str)
    frame.loc[rng.random(rows) < 0.01, "occupation"] = "?"
    frame.loc[rng.random(rows) < 0.002, "age"] = "-1"
    frame.loc[rng.random(rows) < 0.002, "hours_per_week"] = "lots"
    lines = frame.to_csv(header=False, index=False).splitlines()
    for i in rng.choice(rows, rows // 1000, replace=False):
        lines[i] = ",".join(lines[i].split(",")[:5])  # truncated line
    return "\n".join(lines) + "\n"


RAY_DASHBOARD = False  # Ray starts as `pipeline data` starts it: no Ray Train there, so no dashboard
STARTUP = {"seconds": 0.0, "streamed": False}  # Ray's start-up, reported apart from the data work; whether cleaning streamed


def run_ray(csv: str, out: str, stream_above_mb: float | None = None) -> int:
    from pipeline.data.clean import clean_dataset, kept_rows, streaming_reason
    from pipeline.data.ingest import read_dataset
    from pipeline.runtime import init_ray
    from pipeline.tasks import get_task
    from pipeline.tasks.tabular import table_features

    cfg = adult_config(csv, stream_above_mb)
    started = time.perf_counter()
    init_ray(num_cpus=os.cpu_count(), dashboard=RAY_DASHBOARD)
    STARTUP["seconds"] = time.perf_counter() - started
    task = get_task("tabular")
    streaming = streaming_reason(cfg.data)  # as `pipeline run` decides: above data.stream_above_mb, flat memory
    STARTUP["streamed"] = bool(streaming)
    ds = read_dataset(csv, "csv", cfg.data.options, cfg.data.columns)
    prep = table_features(cfg)
    features = (prep.input_columns + [c for c in [prep.label_column] if c], prep.partial)  # fitted in the cleaning pass
    clean = clean_dataset(ds, task.checks(cfg), "pandas", statistics={"features": kept_rows(features)}, materialize=not streaming,
                          quarantine_uri=os.path.join(out, "quarantine"))  # as `pipeline run` writes it
    prep.fit_from_partials(clean.statistics["features"])
    rows = 0
    for batch in clean.kept.map_batches(prep.transform, batch_format="pandas").iter_batches(batch_size=None):
        rows += len(batch["x"])
    assert rows == clean.rows_kept
    return clean.rows_in


def run_pandas(csv: str, out: str, stream_above_mb: float | None = None) -> int:
    from pipeline.data.clean import REASON_COLUMN, annotate_batch
    from pipeline.tasks import get_task
    from pipeline.tasks.tabular import table_features

    cfg = adult_config(csv)
    task = get_task("tabular")
    names = cfg.data.options.column_names
    malformed: list[str] = []
    frame = pd.read_csv(csv, header=None, names=names, dtype=str, engine="pyarrow",
                        on_bad_lines=lambda row: malformed.append(row.text) or "skip")
    frame["_malformed"] = pd.Series([None] * len(frame), dtype="string")
    bad = pd.DataFrame({n: pd.Series([None] * len(malformed), dtype="string") for n in names})
    bad["_malformed"] = pd.array(malformed, dtype="string")
    frame = pd.concat([frame, bad], ignore_index=True)
    frame = annotate_batch(frame, task.checks(cfg))
    rejected = frame[REASON_COLUMN] != ""
    frame[rejected].to_parquet(os.path.join(out, "quarantine.parquet"))
    kept = frame[~rejected]
    prep = table_features(cfg)
    prep.fit_from_partials([prep.partial(kept)])
    x = prep.transform(kept)["x"]
    assert len(x) == len(kept)
    return len(frame)


def child(engine: str, csv: str, stream_above_mb: float | None) -> None:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        rows = {"ray": run_ray, "pandas": run_pandas}[engine](csv, out, stream_above_mb)
        print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "startup_seconds": STARTUP["seconds"],
                          "streamed": STARTUP["streamed"]}))


def tree_memory(parent) -> int:
    """Bytes of memory held by `parent` and its descendants: the sum of each process' PSS, where a
    page shared by n processes (Ray's object store, mapped by every worker that reads a block)
    counts 1/n in each, so it is counted once; summed RSS would count it in every process."""
    import psutil

    total = 0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def measure(engine: str, csv: str, stream_above_mb: float | None = None) -> dict:
    import psutil

    limit = [] if stream_above_mb is None else ["--stream-above-mb", str(stream_above_mb)]
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, "--csv", csv, *limit], stdout=subprocess.PIPE, text=True)
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        started = time.perf_counter()
        peak = max(peak, tree_memory(parent))
        # Each sample walks every process's page tables in the kernel: ~2.5 ms a process, 37 ms for a local
        # Ray's ~15 processes, which at 5 samples a second took a tenth of one of 2 cores from the run
        # measured. Sampling stays at most 1/SAMPLE_SHARE of one core: every 0.2 s for pandas' one process.
        time.sleep(max(0.2, SAMPLE_SHARE * (time.perf_counter() - started)))
    out = [line for line in proc.stdout.read().splitlines() if line.startswith('{"rows"')]  # Ray may print too
    if proc.returncode != 0 or not out:
        raise SystemExit(f"{engine} run failed with status {proc.returncode}")
    result = json.loads(out[-1])
    return {"engine": engine, **result, "rows_per_second": result["rows"] / result["seconds"], "peak_memory_mb": peak / 2**20}


def one_size(rows: int, tmp: str, engines: list[str], stream_above_mb: float | None = None) -> dict:
    csv = os.path.join(tmp, f"adult_like_{rows}.csv")
    started = time.perf_counter()
    generate_csv(Path(csv), rows)
    size_mb = os.path.getsize(csv) / 2**20
    print(f"generated {rows:,} rows ({size_mb:.0f} MiB) in {time.perf_counter() - started:.0f}s", flush=True)
    try:
        results = [measure(engine, csv, stream_above_mb) for engine in engines]
    finally:
        os.remove(csv)
    by = {r["engine"]: r for r in results}
    summary = {"rows": rows, "csv_mb": round(size_mb, 1), "results": results}
    if len(by) == 2:
        summary["ray_over_pandas_throughput"] = by["ray"]["rows_per_second"] / by["pandas"]["rows_per_second"]
        summary["ray_over_pandas_peak_memory"] = by["ray"]["peak_memory_mb"] / by["pandas"]["peak_memory_mb"]
    for r in results:
        print(f"{r['engine']:<8}{r['rows']:>12,}{r['seconds']:>10.1f}{r['startup_seconds']:>19.1f}"
              f"{r['rows_per_second']:>12,.0f}{r['peak_memory_mb']:>14,.0f}" + ("  (cleaning streamed)" if r["streamed"] else ""), flush=True)
    return summary


def write_summary(output: str, curve: list[dict]) -> dict:
    summary = {"cpus": os.cpu_count(), "ray_dashboard": RAY_DASHBOARD, "sizes": curve}
    if len(curve) > 1:  # how peak memory grows from the smallest size to the largest
        first, last = ({r["engine"]: r for r in c["results"]} for c in (curve[0], curve[-1]))
        summary["peak_memory_growth"] = {e: last[e]["peak_memory_mb"] / first[e]["peak_memory_mb"] for e in first}
        summary["rows_growth"] = curve[-1]["rows"] / curve[0]["rows"]
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes (rows) of the scale curve")
    parser.add_argument("--engines", default="pandas,ray", help="which engines to run (pandas, ray)")
    parser.add_argument("--stream-above-mb", type=float, help="Ray Data: stream cleaning above this source size "
                        "(MiB; 0: always; default: the tasks' data.stream_above_mb)")
    parser.add_argument("--child", choices=["ray", "pandas"])
    parser.add_argument("--csv")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "data_stages.json"))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.csv, args.stream_above_mb)
    sizes = [int(r) for r in args.rows.replace("_", "").split(",")]
    engines = args.engines.split(",")
    print(f"{'engine':<8}{'rows':>12}{'seconds':>10}{'of which start-up':>19}{'rows/s':>12}{'peak PSS MiB':>14}")
    curve: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:  # written after each size too, so a run stopped at the largest keeps the others
            curve.append(one_size(rows, tmp, engines, args.stream_above_mb))
            write_summary(args.output, curve)
    summary = write_summary(args.output, curve)
    for c in curve:
        if "ray_over_pandas_throughput" in c:
            print(f"{c['rows']:>12,} rows: ray / pandas throughput x{c['ray_over_pandas_throughput']:.2f}, "
                  f"peak memory x{c['ray_over_pandas_peak_memory']:.2f}")
    for engine, growth in summary.get("peak_memory_growth", {}).items():
        print(f"{engine}: peak memory x{growth:.1f} for x{summary['rows_growth']:.0f} the rows")


if __name__ == "__main__":
    main()
