"""A CSV/TSV reader for Ray Data that keeps what it cannot parse.

Every column is read as text (types are coerced later, per value, so one bad value quarantines one
row instead of failing the file). Rows with the wrong number of fields or invalid UTF-8 come out as
rows with `_malformed` set (line number, problem, raw text) instead of stopping the read or being
dropped silently. Each row carries `_source` (file) and `_record` (its index among the file's rows).
"""

from __future__ import annotations

import csv as pycsv
import io
from typing import Iterator

import pyarrow as pa
from ray.data.datasource.file_based_datasource import FileBasedDatasource

from pipeline.config import TableOptions

HEAD_BYTES = 1 << 16
BLOCK_BYTES = 8 << 20  # ~80k rows of Adult per batch: few, large blocks keep per-block overhead small


class CSVLayout:
    """How to read the files: delimiter, quoting, header, column names, lines to skip."""

    def __init__(self, options: TableOptions, delimiter: str):
        self.delimiter = options.delimiter or delimiter
        self.quote_char = options.quote_char or False
        self.header = options.header if options.header is not None else not options.column_names
        self.column_names = options.column_names
        self.skip_rows = options.skip_rows

    def names_from_head(self, head: bytes, path: str) -> list[str]:
        if self.column_names:
            return list(self.column_names)
        lines = head.decode("utf-8", errors="replace").splitlines()
        if len(lines) <= self.skip_rows:
            raise ValueError(f"{path}: no header line found")
        reader = pycsv.reader([lines[self.skip_rows]], delimiter=self.delimiter,
                              quoting=pycsv.QUOTE_NONE if self.quote_char is False else pycsv.QUOTE_MINIMAL)
        return [name.strip() for name in next(reader)]

    @property
    def lines_to_skip(self) -> int:
        return self.skip_rows + (1 if self.header else 0)


class Prepended(io.RawIOBase):
    """A stream that yields `head` and then the rest of `stream` (the header was peeked at)."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            chunk, self.head = self.head[: len(buffer)], self.head[len(buffer):]
        else:
            chunk = self.stream.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def decode_columns(table: pa.Table, names: list[str]) -> tuple[dict[str, pa.Array], list[str | None]]:
    """Binary columns to UTF-8 text; invalid values become null and flag their row."""
    problems: list[str | None] = [None] * table.num_rows
    columns = {}
    for name in names:
        column = table.column(name).combine_chunks()
        try:
            columns[name] = column.cast(pa.string())
        except pa.ArrowInvalid:
            values = []
            for i, raw in enumerate(column.to_pylist()):
                try:
                    values.append(None if raw is None else raw.decode("utf-8"))
                except UnicodeDecodeError:
                    values.append(None)
                    problems[i] = problems[i] or f"invalid UTF-8 in column {name}"
            columns[name] = pa.array(values, pa.string())
    return columns, problems


class QuarantiningCSVDatasource(FileBasedDatasource):
    _FILE_EXTENSIONS = None  # any name: .csv, .tsv, .data, .test, compressed variants

    def __init__(self, paths, layout: CSVLayout, **kwargs):
        super().__init__(paths, **kwargs)
        self.layout = layout

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        from pyarrow import csv

        head = f.read(HEAD_BYTES)
        names = self.layout.names_from_head(head, path)
        invalid: list[tuple[int | None, str, int, int]] = []

        def on_invalid_row(row) -> str:
            invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
            return "skip"

        reader = csv.open_csv(
            Prepended(head, f),
            read_options=csv.ReadOptions(column_names=names, skip_rows=self.layout.lines_to_skip, use_threads=False,
                                         block_size=BLOCK_BYTES),
            parse_options=csv.ParseOptions(delimiter=self.layout.delimiter, quote_char=self.layout.quote_char,
                                           invalid_row_handler=on_invalid_row),
            convert_options=csv.ConvertOptions(column_types={n: pa.binary() for n in names}, strings_can_be_null=False),
        )
        record = 0
        for batch in reader:
            table = pa.Table.from_batches([batch])
            columns, problems = decode_columns(table, names)
            n = table.num_rows
            yield pa.table({**columns, "_source": pa.array([path] * n, pa.string()),
                            "_record": pa.array(range(record, record + n), pa.int64()),
                            "_malformed": pa.array(problems, pa.string())})
            record += n
            # The reader may already be parsing ahead (and appending) on another thread: take only
            # what is there now, never clear() what has not been yielded.
            taken = len(invalid)
            if taken:
                yield malformed_table(invalid[:taken], names, path)
                del invalid[:taken]
        if invalid:
            yield malformed_table(list(invalid), names, path)


def malformed_table(invalid: list, names: list[str], path: str) -> pa.Table:
    n = len(invalid)
    described = [f"line {num if num is not None else '?'}: expected {exp} fields, got {act}: {text[:300]}"
                 for num, text, exp, act in invalid]
    return pa.table({**{name: pa.nulls(n, pa.string()) for name in names},
                     "_source": pa.array([path] * n, pa.string()), "_record": pa.array([-1] * n, pa.int64()),
                     "_malformed": pa.array(described, pa.string())})
