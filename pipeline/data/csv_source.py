"""A CSV/TSV reader for Ray Data that keeps what it cannot parse.

The dialect (README, "CSV dialect"): each physical line is one record (a line ends at `\\n`; one
trailing `\\r` is dropped; blank lines are not records), so a stray quote can never swallow the lines
after it. Within a line, fields are split at the delimiter; a field that starts with the quote
character is quoted (`""` inside is one quote), exactly as Python's `csv` module reads that line.
With `multiline: true` a quoted field may span lines (pyarrow's reader, newlines in values).

Every column is read as text (types are coerced later, per value, so one bad value quarantines one
row instead of failing the file). A line with the wrong number of fields, invalid UTF-8 or a carriage
return inside it comes out as a row with `_malformed` set (line number, problem, raw text) and null
fields, never dropped. Each row carries `_source` (file), `_record` (its index among the file's
records) and `_line` (its physical line number, 1-based).

Lines without a quote character are split by vectorised Arrow kernels; only lines holding one go
through Python's `csv` module.
"""

from __future__ import annotations

import csv as pycsv
import io
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data.datasource.file_based_datasource import FileBasedDatasource

from pipeline.config import TableOptions
from pipeline.errors import DataError

BLOCK_BYTES = 8 << 20  # ~80k rows of Adult per block: few, large blocks keep per-block overhead small
RAW_TEXT_CHARS = 300  # how much of a malformed line its `_malformed` description keeps
BOM = b"\xef\xbb\xbf"


class CSVLayout:
    """How to read the files: delimiter, quoting, header, column names, lines to skip, block size."""

    def __init__(self, options: TableOptions, delimiter: str, block_bytes: int = BLOCK_BYTES):
        self.delimiter = options.delimiter or delimiter
        self.quote_char = options.quote_char or False
        self.header = options.header if options.header is not None else not options.column_names
        self.column_names = options.column_names
        self.skip_rows = options.skip_rows
        self.multiline = options.multiline
        self.block_bytes = block_bytes

    @property
    def lines_to_skip(self) -> int:
        return self.skip_rows + (1 if self.header else 0)

    def parse_line(self, text: str) -> list[str]:
        """One line's fields, as Python's csv module reads that line alone."""
        quoting = pycsv.QUOTE_NONE if self.quote_char is False else pycsv.QUOTE_MINIMAL
        return next(pycsv.reader([text], delimiter=self.delimiter, quotechar=self.quote_char or '"', quoting=quoting), [])

    def names_from_head(self, head: bytes, path: str) -> list[str]:
        """Column names: from the config, or the header line at the start of `head`."""
        if self.column_names:
            return list(self.column_names)
        lines = head.removeprefix(BOM).split(b"\n")
        if len(lines) <= self.skip_rows or (len(lines) == self.skip_rows + 1 and not lines[-1].strip()):
            raise DataError(f"{path}: no header line found")
        names = [name.strip() for name in self.parse_line(lines[self.skip_rows].rstrip(b"\r").decode("utf-8", "replace"))]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated or "" in names:
            raise DataError(f"{path}: the header names {'the column(s) ' + ', '.join(repeated) + ' twice' if repeated else 'an empty column'}")
        return names


def physical_lines(chunk: bytes) -> pa.Array:
    """The lines of `chunk` (binary, without `\\n` and one trailing `\\r`)."""
    lines = pc.split_pattern(pa.array([chunk], pa.binary()), "\n").flatten()
    return pc.replace_substring_regex(lines, "\r$", "")


class RecordParser:
    """Turns complete lines of one file into a table of text columns plus `_source/_record/_line/_malformed`."""

    def __init__(self, layout: CSVLayout, names: list[str], path: str):
        self.layout, self.names, self.path = layout, names, path

    def parse(self, lines: pa.Array, first_record: int, first_line: int) -> pa.Table:
        line_numbers = np.arange(first_line, first_line + len(lines))
        records = pc.not_equal(pc.binary_length(lines), 0).to_numpy(zero_copy_only=False)  # blank lines are not records
        lines, line_numbers = lines.filter(pa.array(records)), line_numbers[records]
        n, ncols = len(lines), len(self.names)
        problems = np.full(n, None, dtype=object)
        utf8_ok = valid_utf8(lines)
        stray_cr = pc.match_substring(lines, "\r").to_numpy(zero_copy_only=False)
        quoted = (pc.match_substring(lines, self.layout.quote_char).to_numpy(zero_copy_only=False)
                  if self.layout.quote_char else np.zeros(n, bool))
        plain = utf8_ok & ~stray_cr & ~quoted
        plain_at, other_at = np.flatnonzero(plain), np.flatnonzero(~plain)
        plain_columns = self.split_plain(lines.filter(pa.array(plain)), problems, plain_at, line_numbers, lines)
        other_values: list[list] = [[None] * len(other_at) for _ in range(ncols)]
        for k, i in enumerate(other_at):  # lines with a quote (or a problem): Python's csv module
            raw = lines[i].as_py()
            if not utf8_ok[i]:
                problems[i] = describe(line_numbers[i], "invalid UTF-8", raw)
            elif stray_cr[i]:
                problems[i] = describe(line_numbers[i], "a carriage return inside the line", raw)
            else:
                fields = self.layout.parse_line(raw.decode("utf-8"))
                if len(fields) != ncols:
                    problems[i] = describe(line_numbers[i], f"expected {ncols} fields, got {len(fields)}", raw)
                else:
                    for j, value in enumerate(fields):
                        other_values[j][k] = value
        # Both parts back in line order: position i takes plain value p or other value len(plain_at) + k.
        order = np.empty(n, np.int64)
        order[plain_at], order[other_at] = np.arange(len(plain_at)), len(plain_at) + np.arange(len(other_at))
        out = {}
        for j, name in enumerate(self.names):
            parts = pa.concat_arrays([plain_columns[j], pa.array(other_values[j], pa.string())])
            out[name] = parts if not len(other_at) else parts.take(pa.array(order))
        out.update({"_source": pa.array([self.path] * n, pa.string()),
                    "_record": pa.array(np.arange(first_record, first_record + n), pa.int64()),
                    "_line": pa.array(line_numbers, pa.int64()),
                    "_malformed": pa.array(problems, pa.string())})
        return pa.table(out)

    def split_plain(self, lines: pa.Array, problems: np.ndarray, positions: np.ndarray, line_numbers: np.ndarray,
                    all_lines: pa.Array) -> list[pa.Array]:
        """Lines without quotes, split at the delimiter by Arrow kernels: one string column per name,
        aligned with `lines`; a line with the wrong field count is malformed (its fields null)."""
        ncols = len(self.names)
        if not len(lines):
            return [pa.array([], pa.string()) for _ in range(ncols)]
        fields = pc.split_pattern(lines, self.layout.delimiter)
        counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
        good = counts == ncols
        for k in np.flatnonzero(~good):
            i = positions[k]
            problems[i] = describe(line_numbers[i], f"expected {ncols} fields, got {counts[k]}", all_lines[i].as_py())
        values = pa.concat_arrays([fields.values.cast(pa.string()), pa.nulls(1, pa.string())])  # UTF-8: checked per line
        starts = fields.offsets.to_numpy()[:-1]
        null_at = len(values) - 1
        return [values.take(pa.array(np.where(good, starts + j, null_at))) for j in range(ncols)]


def valid_utf8(lines: pa.Array) -> np.ndarray:
    try:
        lines.cast(pa.string())
        return np.ones(len(lines), bool)
    except pa.ArrowInvalid:  # rare: find the lines at fault one by one
        ok = np.ones(len(lines), bool)
        for i, raw in enumerate(lines.to_pylist()):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                ok[i] = False
        return ok


def describe(line: int | None, problem: str, raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return f"line {line if line is not None else '?'}: {problem}: {text[:RAW_TEXT_CHARS]}"


class QuarantiningCSVDatasource(FileBasedDatasource):
    _FILE_EXTENSIONS = None  # any name: .csv, .tsv, .data, .test, compressed variants

    def __init__(self, paths, layout: CSVLayout, **kwargs):
        super().__init__(paths, **kwargs)
        self.layout = layout

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        if self.layout.multiline:
            yield from read_multiline(f, path, self.layout)
            return
        yield from read_lines(f, path, self.layout)


def read_lines(f, path: str, layout: CSVLayout) -> Iterator[pa.Table]:
    """Reads `f` in blocks of `layout.block_bytes`, each cut at its last line end, so that which
    records come out does not depend on the block size."""
    names = list(layout.column_names) if layout.column_names else None
    parser = RecordParser(layout, names, path) if names else None
    pending, lines_seen, record, skip = b"", 0, 0, layout.lines_to_skip
    while True:
        data = f.read(layout.block_bytes)
        chunk = pending + data
        if data:
            cut = chunk.rfind(b"\n")
            if cut < 0 or chunk.count(b"\n", 0, cut + 1) < skip:
                pending = chunk  # not one whole line yet, or not every line to skip
                continue
            chunk, pending = chunk[:cut], chunk[cut + 1:]
        elif not chunk:
            break
        if skip:  # the start of the file: lines to skip, then the header
            chunk = chunk.removeprefix(BOM)
            if parser is None:
                parser = RecordParser(layout, layout.names_from_head(chunk, path), path)
            rest = chunk.split(b"\n", skip)
            chunk = rest[skip] if len(rest) > skip else b""
            lines_seen, skip = skip, 0
            if not chunk:
                if data:
                    continue
                break
        lines = physical_lines(chunk)
        table = parser.parse(lines, record, lines_seen + 1)
        lines_seen += len(lines)
        record += table.num_rows
        if table.num_rows:
            yield table
        if not data:
            break


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


def read_multiline(f, path: str, layout: CSVLayout) -> Iterator[pa.Table]:
    """`multiline: true`: pyarrow's reader with newlines allowed inside quoted values. A record is what
    that reader parses (a stray quote can then join lines: this mode trusts the file's quoting)."""
    from pyarrow import csv

    head = f.read(1 << 16)
    names = layout.names_from_head(head.removeprefix(BOM), path)
    invalid: list[tuple[int | None, str, int, int]] = []

    def on_invalid_row(row) -> str:
        invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    reader = csv.open_csv(
        Prepended(head.removeprefix(BOM), f),
        read_options=csv.ReadOptions(column_names=names, skip_rows=layout.lines_to_skip, use_threads=False,
                                     block_size=layout.block_bytes),
        parse_options=csv.ParseOptions(delimiter=layout.delimiter, quote_char=layout.quote_char, newlines_in_values=True,
                                       invalid_row_handler=on_invalid_row),
        convert_options=csv.ConvertOptions(column_types={n: pa.binary() for n in names}, strings_can_be_null=False),
    )
    record = 0
    for batch in reader:
        n = batch.num_rows
        problems = np.full(n, None, dtype=object)
        columns = {}
        for name in names:
            column = batch.column(name)
            ok = valid_utf8(column)
            for i in np.flatnonzero(~ok):
                problems[i] = problems[i] or f"record {record + i}: invalid UTF-8 in column {name}"
            columns[name] = pc.if_else(pa.array(ok), column, pa.nulls(n, pa.binary())).cast(pa.string())
        yield pa.table({**columns, "_source": pa.array([path] * n, pa.string()),
                        "_record": pa.array(range(record, record + n), pa.int64()), "_line": pa.nulls(n, pa.int64()),
                        "_malformed": pa.array(problems, pa.string())})
        record += n
    if invalid:  # after the parsed records: pyarrow reports them as it goes, without their position
        n = len(invalid)
        yield pa.table({**{name: pa.nulls(n, pa.string()) for name in names}, "_source": pa.array([path] * n, pa.string()),
                        "_record": pa.array(range(record, record + n), pa.int64()),
                        "_line": pa.array([num for num, *_ in invalid], pa.int64()),
                        "_malformed": pa.array([describe(num, f"expected {exp} fields, got {act}", text)
                                                for num, text, exp, act in invalid], pa.string())})
