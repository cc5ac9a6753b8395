"""Property-based: the CSV reader finds exactly the records Python's csv module finds line by line,
whatever the block size it reads with and however a file is cut into ranges, and never merges or loses one."""

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import TableOptions
from pipeline.data.csv_source import CSVLayout, FilePart, count_part, plan_parts, range_count, read_lines, read_parts, read_task_count

from tests.dirty_csv import COLUMNS, dirty_lines, oracle_records, split_files

BLOCK_BYTES = [1, 7, 64, 1 << 10, 4 << 10, 64 << 10, 16 << 20]


def read(data: bytes, block_bytes: int) -> pa.Table:
    layout = CSVLayout(TableOptions(na_values=["?"]), ",", block_bytes=block_bytes)
    tables = list(read_lines(pa.BufferReader(data), "f.csv", layout))
    return pa.concat_tables(tables) if tables else None


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dirty_lines(), st.sampled_from(BLOCK_BYTES))
def test_records_match_pythons_csv_line_by_line(lines, block_bytes):
    (data,) = split_files(lines, 1)
    expected = oracle_records([data])
    table = read(data, block_bytes)
    rows = table.to_pylist() if table is not None else []
    assert len(rows) == len(expected)  # rows_in: every record, malformed ones too
    for row, (_, record, fields) in zip(rows, expected):
        assert row["_record"] == record
        if fields is None:
            assert row["_malformed"] is not None and row["_malformed"].startswith(f"line {row['_line']}: ")
            assert all(row[c] is None for c in COLUMNS)
        else:
            assert row["_malformed"] is None
            assert [row[c] for c in COLUMNS] == fields


@settings(max_examples=100, deadline=None, derandomize=True)
@given(dirty_lines(), st.sampled_from(BLOCK_BYTES), st.sampled_from(BLOCK_BYTES))
def test_the_block_size_changes_nothing(lines, small, large):
    (data,) = split_files(lines, 1)
    a, b = read(data, small), read(data, large)
    assert (a is None and b is None) or a.equals(b)


def read_in_ranges(data: bytes, range_bytes: int, block_bytes: int, options: TableOptions) -> tuple[pa.Table | None, int]:
    """The file cut into ranges of about `range_bytes` (counted in this process, not on Ray), each read
    on its own, the tables concatenated; and how many ranges there were."""
    layout = CSVLayout(options, ",", block_bytes=block_bytes, range_bytes=range_bytes)
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "f.csv")
        Path(path).write_bytes(data)
        fs = pafs.LocalFileSystem()
        parts = plan_parts(fs, [path], layout, count=lambda jobs: [count_part(*job) for job in jobs])
        tables = [t.drop_columns(["_source"]) for t in read_parts(fs, parts, layout)]
    return (pa.concat_tables(tables) if tables else None), len(parts)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dirty_lines(), st.sampled_from([1, 13, 64, 256, 1 << 10]), st.sampled_from([1, 64, 1 << 10, 16 << 20]),
       st.integers(0, 2), st.booleans())
def test_a_file_cut_into_ranges_reads_as_one(lines, range_bytes, block_bytes, skip_rows, bom):
    """Records, their `_record` and `_line`, and the quarantine's line numbers do not depend on where the
    ranges fall: after the header and skipped lines, mid-line, on a blank line or a `\\r\\n`."""
    (data,) = split_files(lines, 1)
    data = (b"\xef\xbb\xbf" if bom else b"") + b"skipped line\n" * skip_rows + data
    options = TableOptions(na_values=["?"], skip_rows=skip_rows)
    whole = CSVLayout(options, ",", block_bytes=block_bytes)
    tables = [t.drop_columns(["_source"]) for t in read_lines(pa.BufferReader(data), "f.csv", whole)]
    expected = pa.concat_tables(tables) if tables else None
    table, ranges = read_in_ranges(data, range_bytes, block_bytes, options)
    assert ranges > 1 or len(data) <= range_bytes
    assert (table is None and expected is None) or table.equals(expected)


def test_a_large_file_is_planned_in_ranges_and_a_compressed_one_whole(tmp_path):
    import gzip

    data = b"a,b\n" + b"".join(b"%d,x\n" % i for i in range(2000))
    (tmp_path / "big.csv").write_bytes(data)
    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(data))
    layout = CSVLayout(TableOptions(), ",", range_bytes=4096)
    fs = pafs.LocalFileSystem()
    counted = lambda jobs: [count_part(*job) for job in jobs]  # noqa: E731
    parts = plan_parts(fs, [str(tmp_path / "big.csv")], layout, count=counted)
    assert len(parts) == -(-len(data) // 4096) and [p.begin for p in parts][0] == 0
    assert all(data[p.begin - 1:p.begin] == b"\n" for p in parts[1:])  # every range starts a line
    assert [p.first_record for p in parts[:2]] == [0, data[:parts[1].begin].count(b"\n") - 1]  # the header is no record
    (gz,) = plan_parts(fs, [str(tmp_path / "big.csv.gz")], layout, count=counted)
    assert gz.end is None
    rows = pa.concat_tables(list(read_parts(fs, parts, layout)))
    assert rows["_record"].to_pylist() == list(range(2000)) and rows["a"].to_pylist() == [str(i) for i in range(2000)]
    assert rows["_line"].to_pylist() == list(range(2, 2002))


def test_multiline_mode_lets_a_quoted_field_span_lines():
    from pipeline.data.csv_source import read_multiline

    data = b'id,text,n\n1,"two\nlines",3\n2,plain,4\n3,short\n'
    layout = CSVLayout(TableOptions(multiline=True), ",")
    rows = pa.concat_tables(list(read_multiline(pa.BufferReader(data), "f.csv", layout))).to_pylist()
    assert [(r["id"], r["text"], r["_malformed"] is None) for r in rows] == [
        ("1", "two\nlines", True), ("2", "plain", True), (None, None, False)]
    default = read(data, 1 << 20).to_pylist()  # one record per line: the open quote costs its two lines
    assert [r["_malformed"] is None for r in default] == [False, False, True, False]


def test_a_file_is_cut_into_two_ranges_per_cpu_down_to_a_block_and_read_tasks_never_outnumber_parts():
    layout = CSVLayout(TableOptions(), ",")  # 32 MiB ranges, 8 MiB blocks
    mib = 1 << 20
    assert range_count(100 * mib, layout) == 4  # one per range_bytes
    assert range_count(100 * mib, layout, ranges_at_least=4) == 4
    assert range_count(100 * mib, layout, ranges_at_least=32) == 12  # no range under MIN_RANGE_BYTES
    assert range_count(5 * mib, layout, ranges_at_least=32) == 1
    big = [FilePart("a.csv", 100 * mib, i * 25 * mib, (i + 1) * 25 * mib) for i in range(4)]
    assert read_task_count(big, layout, cpus=2) == 4  # a task a part: nothing for Ray Data to split
    assert read_task_count(big, layout, cpus=4) == -1  # fewer parts than two per CPU: Ray Data splits the output
    small = [FilePart(f"{i}.csv", 10 << 10) for i in range(1000)]
    assert read_task_count(small, layout, cpus=2) == 4  # many small files: two tasks per CPU, as Ray Data would


def test_ray_datas_no_cpu_warning_is_dropped_only_right_after_the_line_counts():
    """Ray Data's "no available CPUs ... will hang" read a stale resource view after the line-count tasks;
    only then is it dropped."""
    import logging

    from pipeline.data.local import StaleNoCpuWarning

    StaleNoCpuWarning.after_own_tasks()
    StaleNoCpuWarning.after_own_tasks()  # installed once
    (dropper,) = [f for f in logging.getLogger("ray.data.dataset").filters if isinstance(f, StaleNoCpuWarning)]

    def passes(message: str) -> bool:
        return dropper.filter(logging.LogRecord("ray.data.dataset", logging.WARNING, __file__, 1, message, None, None))

    warning = "Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang"
    assert not passes(warning) and passes("another warning")
    StaleNoCpuWarning.until = 0.0  # the moment has passed
    assert passes(warning)
