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

Speed: runs of lines that hold no quote, or only whole quoted fields (checked by one RE2 match per
line), go through pyarrow's parser, which cannot join lines then; only the other lines (a stray quote,
a carriage return inside) go through Python's `csv` module, and are put back in line order.
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

    @property
    def dialect(self) -> dict:
        return {"delimiter": self.delimiter, "quotechar": self.quote_char or '"',
                "quoting": pycsv.QUOTE_NONE if self.quote_char is False else pycsv.QUOTE_MINIMAL}

    @property
    def whole_quoted_fields(self) -> str:
        """A line (RE2) whose every field is plain text or one whole quoted field: pyarrow reads it as
        Python's csv module does, and cannot carry a quote over to the next line."""
        d, q = (re2_literal(c) for c in (self.delimiter, self.quote_char or '"'))
        field = f"(?:[^{q}{d}\\n]*|{q}(?:[^{q}]|{q}{q})*{q})"
        return f"^{field}(?:{d}{field})*$"

    def parse_line(self, text: str) -> list[str]:
        """One line's fields, as Python's csv module reads that line alone."""
        return next(pycsv.reader([text], **self.dialect), [])

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


class RecordParser:
    """Turns a chunk of whole lines of one file into a table of text columns plus
    `_source/_record/_line/_malformed`."""

    def __init__(self, layout: CSVLayout, names: list[str], path: str):
        self.layout, self.names, self.path = layout, names, path

    def parse(self, chunk: bytes, first_record: int, first_line: int) -> pa.Table:
        buffer = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero(buffer == 10)  # each line's end
        starts, stops = np.r_[0, ends + 1], np.r_[ends, len(chunk)]
        crlf = np.zeros(len(starts), bool)
        crlf[stops > starts] = buffer[stops[stops > starts] - 1] == 13
        nonblank = stops - starts - crlf > 0  # blank lines are not records
        record_lines = np.flatnonzero(nonblank) + first_line
        if not len(record_lines):
            table = pa.table({**{name: pa.array([], pa.string()) for name in self.names}, "_malformed": pa.array([], pa.string())})
        else:
            # Lines with a carriage return inside, or quotes that do not form whole quoted fields
            # ("a,""b"" c" is fine, 'a,"b' is not), need Python's csv module; pyarrow parses the rest.
            quote = self.layout.quote_char
            carriage = np.setdiff1d(np.flatnonzero(buffer == 13), stops[crlf] - 1)
            slow = np.zeros(len(starts), bool)
            slow[np.searchsorted(starts, carriage, side="right") - 1] = True
            if quote:
                quoted = np.zeros(len(starts), bool)
                if len(quote.encode()) > 1:  # a multi-byte quote character: look at every line
                    quoted[:] = nonblank
                else:
                    quoted[np.searchsorted(starts, np.flatnonzero(buffer == ord(quote)), side="right") - 1] = True
                check = np.flatnonzero(quoted & ~slow)
                if len(check):
                    lines = pa.array([chunk[starts[p]:stops[p] - crlf[p]] for p in check], pa.binary())
                    whole = pc.match_substring_regex(lines, self.layout.whole_quoted_fields).to_numpy(zero_copy_only=False)
                    slow[check[~whole]] = True
            table = self.parse_runs(chunk, starts, stops - crlf, nonblank, slow, record_lines)
        n = table.num_rows
        return table.append_column("_source", pa.array([self.path] * n, pa.string())) \
            .append_column("_record", pa.array(np.arange(first_record, first_record + n), pa.int64())) \
            .append_column("_line", pa.array(record_lines, pa.int64()))

    def parse_runs(self, chunk: bytes, starts, stops, nonblank, slow, record_lines) -> pa.Table:
        """Runs of lines pyarrow can read alone through pyarrow, the other lines through Python's csv
        module, put back in line order. A chunk that is not valid UTF-8 goes through Python whole."""
        record_of = np.cumsum(nonblank) - 1  # physical line -> record index
        if not is_utf8(chunk):
            slow = nonblank.copy()
        slow_lines = np.flatnonzero(slow & nonblank)
        parts, order_parts = [], []
        edges = np.r_[-1, slow_lines, len(starts)]
        for left, right in zip(edges[:-1] + 1, edges[1:]):  # plain lines left..right-1
            records = record_of[left:right][nonblank[left:right]]
            if not len(records):
                continue
            table = self.parse_plain(chunk[starts[left]:stops[right - 1]], record_lines[records])
            if table is None:  # pyarrow did not give one row per line: leave it to Python
                table = self.parse_lines([chunk[starts[p]:stops[p]] for p in range(left, right) if nonblank[p]],
                                         record_lines[records])
            parts.append(table)
            order_parts.append(records)
        if len(slow_lines):
            parts.append(self.parse_lines([chunk[starts[p]:stops[p]] for p in slow_lines], record_lines[record_of[slow_lines]]))
            order_parts.append(record_of[slow_lines])
        if len(parts) == 1:
            return parts[0]
        position = np.empty(len(record_lines), np.int64)  # record i is row position[i] of the parts concatenated
        position[np.concatenate(order_parts)] = np.arange(len(record_lines))
        return pa.concat_tables(parts).take(pa.array(position))

    def parse_plain(self, chunk: bytes, record_lines: np.ndarray) -> pa.Table | None:
        """pyarrow's parser on lines that hold no quote or only whole quoted fields (so it cannot join
        lines): one row per non-blank line, or None to fall back to Python."""
        from pyarrow import csv

        records = len(record_lines)
        invalid: list = []
        table = csv.read_csv(
            pa.BufferReader(chunk),
            read_options=csv.ReadOptions(column_names=self.names, use_threads=False, block_size=max(len(chunk) + 1, 1 << 20)),
            parse_options=csv.ParseOptions(delimiter=self.layout.delimiter, quote_char=self.layout.quote_char,
                                           invalid_row_handler=lambda row: invalid.append(row) or "skip"),
            # Text columns: the chunk was checked to be valid UTF-8 (and pyarrow parses binary ones slower).
            convert_options=csv.ConvertOptions(column_types={n: pa.string() for n in self.names}, strings_can_be_null=False))
        numbers = [row.number for row in invalid]
        if table.num_rows + len(invalid) != records or any(k is None or k < 1 for k in numbers):
            return None  # not one row per record: let the line-by-line path decide
        problems: list[str | None] = [None] * records
        parsed = np.ones(records, bool)  # records pyarrow returned as rows (in order)
        for row in invalid:  # pyarrow numbers the non-blank rows from 1: the record index + 1
            k = row.number - 1
            parsed[k] = False
            problems[k] = describe(record_lines[k], f"expected {len(self.names)} fields, got {row.actual_columns}", row.text)
        if not invalid:
            return table.append_column("_malformed", pa.nulls(records, pa.string()))
        index = pa.array(np.where(parsed, np.cumsum(parsed) - 1, table.num_rows))  # malformed: the null at the end
        columns = {name: pa.concat_arrays([table.column(name).combine_chunks(), pa.nulls(1, pa.string())]).take(index)
                   for name in self.names}
        return pa.table({**columns, "_malformed": pa.array(problems, pa.string())})

    def parse_lines(self, lines: list[bytes], record_lines: np.ndarray) -> pa.Table:
        """Non-blank lines through Python's csv module, each line on its own (the dialect's definition).

        One reader runs over all lines; where it joined lines (a quote left open), those lines are read
        again one at a time. The fields of good rows travel to Arrow as one newline-joined text (no field
        holds a newline), split by an Arrow kernel."""
        import gc

        ncols = len(self.names)
        problems: list[str | None] = [None] * len(lines)
        joined = b"\n".join(lines)
        if is_utf8(joined):
            texts: list[str | None] = joined.decode("utf-8").split("\n")
        else:
            texts = [decoded(raw) for raw in lines]
        for i, text in enumerate(texts):
            if text is None:
                problems[i] = describe(record_lines[i], "invalid UTF-8", lines[i])
            elif "\r" in text:
                problems[i] = describe(record_lines[i], "a carriage return inside the line", lines[i])
                texts[i] = None
        candidates = [i for i, text in enumerate(texts) if text is not None]
        collecting = gc.isenabled()
        gc.disable()  # millions of small lists: the cyclic collector would dominate the time
        try:
            parsed = self.fields_by_line([texts[i] for i in candidates])
        finally:
            if collecting:
                gc.enable()
        good: list[int] = []
        flat: list[list[str]] = []
        for i, fields in zip(candidates, parsed):
            if isinstance(fields, str):
                problems[i] = describe(record_lines[i], fields, lines[i])
            elif len(fields) != ncols:
                problems[i] = describe(record_lines[i], f"expected {ncols} fields, got {len(fields)}", lines[i])
            else:
                good.append(i)
                flat.append(fields)
        index = np.full(len(lines), len(good), np.int64)  # rows without fields point at the null
        index[good] = np.arange(len(good))
        columns = self.columns_from_rows(flat)
        take = pa.array(index)
        out = {name: pa.concat_arrays([columns[j], pa.nulls(1, pa.string())]).take(take) for j, name in enumerate(self.names)}
        return pa.table({**out, "_malformed": pa.array(problems, pa.string())})

    def fields_by_line(self, texts: list[str]) -> list:
        """Per text: its fields as Python's csv reads that line alone, or a problem (str)."""
        reader = pycsv.reader(iter(texts), **self.layout.dialect)
        out: list = []
        while len(out) < len(texts):
            before = reader.line_num
            try:
                fields = next(reader)
            except StopIteration:
                break
            except pycsv.Error as exc:  # e.g. a field beyond the csv module's size limit
                out.extend(str(exc) for _ in range(reader.line_num - before))
                continue
            if reader.line_num - before == 1:
                out.append(fields)
            else:  # a quote left open joined lines: read each of them alone
                for text in texts[before:reader.line_num]:
                    try:
                        out.append(self.layout.parse_line(text))
                    except pycsv.Error as exc:
                        out.append(str(exc))
        return out

    def columns_from_rows(self, rows: list[list[str]]) -> list[pa.Array]:
        """Rows of `ncols` strings as Arrow columns, without building one Python list per column."""
        ncols = len(self.names)
        if not rows:
            return [pa.array([], pa.string()) for _ in range(ncols)]
        import itertools

        text = "\n".join(itertools.chain.from_iterable(rows))
        values = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten().cast(pa.string())
        return [values.take(pa.array(np.arange(j, len(values), ncols))) for j in range(ncols)]


def decoded(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def re2_literal(text: str) -> str:
    """`text` as an RE2 pattern that matches it literally, also inside a character class."""
    return "".join(f"\\x{{{ord(c):x}}}" for c in text)


def is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def valid_utf8(lines: pa.Array) -> np.ndarray:
    try:
        lines.cast(pa.string())
        return np.ones(len(lines), bool)
    except pa.ArrowInvalid:  # rare: find the lines at fault one by one
        return np.array([decoded(raw) is not None for raw in lines.to_pylist()], bool)


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
        table = parser.parse(chunk, record, lines_seen + 1)
        lines_seen += chunk.count(b"\n") + 1
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
