"""Property-based: the CSV reader finds exactly the records Python's csv module finds line by line,
whatever the block size it reads with, and never merges or loses one."""

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import TableOptions
from pipeline.data.csv_source import CSVLayout, read_lines

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


def test_multiline_mode_lets_a_quoted_field_span_lines():
    from pipeline.data.csv_source import read_multiline

    data = b'id,text,n\n1,"two\nlines",3\n2,plain,4\n3,short\n'
    layout = CSVLayout(TableOptions(multiline=True), ",")
    rows = pa.concat_tables(list(read_multiline(pa.BufferReader(data), "f.csv", layout))).to_pylist()
    assert [(r["id"], r["text"], r["_malformed"] is None) for r in rows] == [
        ("1", "two\nlines", True), ("2", "plain", True), (None, None, False)]
    default = read(data, 1 << 20).to_pylist()  # one record per line: the open quote costs its two lines
    assert [r["_malformed"] is None for r in default] == [False, False, True, False]
