"""The quarantining CSV reader (one record per physical line) against pyarrow's CSV reader and Python's
csv module, on a generated Adult-like CSV, in one process, side by side.

pyarrow's reader is the speed to approach; it is what the pipeline used before, and it lets a stray
quote join lines (its record count is printed beside the true one). Python's `csv` module, one line at
a time, is the reference the property-based tests check the pipeline's reader against. A second file
puts a quoted field on every line, the reader's slow path (those lines go through Python's csv module).

    python benchmarks/csv_reader.py                # 1,000,000 rows; writes benchmarks/results/csv_reader.json
    python benchmarks/csv_reader.py --rows 200000
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_stages import generate_csv  # noqa: E402
from pipeline.config import TableOptions  # noqa: E402
from pipeline.data.csv_source import CSVLayout, read_lines  # noqa: E402

NAMES = 15


def with_stray_quotes(path: Path, every: int) -> int:
    """Opens a quote that never closes at the start of one line's second field in `every`; returns how many."""
    lines = path.read_text().splitlines()
    count = 0
    for i in range(every // 2, len(lines), every):
        first, rest = lines[i].split(",", 1)
        lines[i] = f'{first},"{rest}'
        count += 1
    path.write_text("\n".join(lines) + "\n")
    return count


def all_quoted(src: Path, dst: Path) -> None:
    """Every line's fourth field (education) quoted, as spreadsheet exports often do."""
    out = []
    for line in src.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 3:
            fields[3] = f'"{fields[3]}"'
        out.append(",".join(fields))
    dst.write_text("\n".join(out) + "\n")


def pipeline_reader(path: Path) -> tuple[int, int]:
    layout = CSVLayout(TableOptions(column_names=[f"c{i}" for i in range(NAMES)]), ",")
    records = malformed = 0
    with pa.OSFile(str(path)) as f:
        for table in read_lines(f, str(path), layout):
            records += table.num_rows
            malformed += table.num_rows - table.column("_malformed").null_count
    return records, malformed


def pyarrow_reader(path: Path, newlines_in_values: bool = False) -> tuple[int, int]:
    from pyarrow import csv as pacsv

    names = [f"c{i}" for i in range(NAMES)]
    bad = []
    reader = pacsv.open_csv(str(path), read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=8 << 20),
                            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: bad.append(row) or "skip",
                                                             newlines_in_values=newlines_in_values),
                            convert_options=pacsv.ConvertOptions(column_types={n: pa.binary() for n in names}))
    records = sum(batch.num_rows for batch in reader)
    return records + len(bad), len(bad)


def python_csv(path: Path) -> tuple[int, int]:
    records = malformed = 0
    with open(path, newline="") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line:
                continue
            records += 1
            malformed += len(next(csv.reader([line]))) != NAMES
    return records, malformed


VARIANTS = {"pipeline line reader": pipeline_reader, "pyarrow csv (before)": pyarrow_reader,
            "pyarrow csv, newlines_in_values": lambda path: pyarrow_reader(path, True), "python csv per line": python_csv}


def best_of(fn, path: Path, repeats: int) -> tuple[float, tuple[int, int]]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(path)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "csv_reader.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, quoted = Path(tmp) / "adult.csv", Path(tmp) / "quoted.csv"
        generate_csv(plain, args.rows)
        strays = with_stray_quotes(plain, 10_000)
        all_quoted(plain, quoted)
        results = {"rows": args.rows, "stray_quote_lines": strays, "files": {}}
        for label, path in (("adult (0.01% stray quotes)", plain), ("a quoted field on every line", quoted)):
            rows = {}
            for name, fn in VARIANTS.items():
                try:
                    seconds, (records, malformed) = best_of(fn, path, args.repeats)
                except pa.ArrowInvalid as exc:  # pyarrow's default reader on a stray quote
                    rows[name] = {"error": str(exc).splitlines()[0]}
                    print(f"{label:<30} {name:<32} failed: {rows[name]['error']}", flush=True)
                    continue
                rows[name] = {"seconds": round(seconds, 3), "records": records, "malformed": malformed,
                              "mib_per_s": round(path.stat().st_size / 2**20 / seconds, 1)}
                print(f"{label:<30} {name:<32} {seconds:7.2f} s  {rows[name]['mib_per_s']:6.1f} MiB/s  "
                      f"records {records:,}  malformed {malformed:,}", flush=True)
            base = rows["pipeline line reader"]["seconds"]
            for row in rows.values():
                if "seconds" in row:
                    row["time_vs_pipeline"] = round(row["seconds"] / base, 2)
            results["files"][label] = {"mib": round(path.stat().st_size / 2**20, 1), "variants": rows}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
