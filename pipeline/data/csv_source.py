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
An uncompressed file larger than `range_bytes` is read by several tasks at once, a byte range of
whole lines each: a quick parallel pass counts each range's lines and records first, so that
`_line`, `_record` and the quarantine's line numbers are the same as one task reading the file.
"""

from __future__ import annotations

import csv as pycsv
import functools
import io
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.config import TableOptions
from pipeline.data.ingest import strip_compression
from pipeline.data.local import StaleNoCpuWarning
from pipeline.errors import DataError

BLOCK_BYTES = 8 << 20  # ~80k rows of Adult per block: few, large blocks keep per-block overhead small
RANGE_BYTES = 32 << 20  # an uncompressed file above this is read by several tasks, this much each
MIN_RANGE_BYTES = BLOCK_BYTES  # a smaller file is cut into more ranges only down to this size (see `plan_parts`)
RAW_TEXT_CHARS = 300  # how much of a malformed line its `_malformed` description keeps
BOM = b"\xef\xbb\xbf"


class CSVLayout:
    """How to read the files: delimiter, quoting, header, column names, lines to skip, block and range sizes."""

    def __init__(self, options: TableOptions, delimiter: str, block_bytes: int = BLOCK_BYTES, range_bytes: int = RANGE_BYTES):
        self.delimiter = options.delimiter or delimiter
        self.quote_char = options.quote_char or False
        self.header = options.header if options.header is not None else not options.column_names
        self.column_names = options.column_names
        self.skip_rows = options.skip_rows
        self.multiline = options.multiline
        self.block_bytes, self.range_bytes = block_bytes, range_bytes

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
        starts, stops, crlf, nonblank = line_bounds(buffer)
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


def line_bounds(buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each line's start and end (at its `\\n`, or the buffer's end), whether it ends in `\\r\\n`, and
    whether it is a record: blank lines are not."""
    ends = np.flatnonzero(buffer == 10)
    starts, stops = np.r_[0, ends + 1], np.r_[ends, len(buffer)]
    crlf = np.zeros(len(starts), bool)
    crlf[stops > starts] = buffer[stops[stops > starts] - 1] == 13
    return starts, stops, crlf, stops - starts - crlf > 0


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


@dataclass(frozen=True)
class FilePart:
    """What one read step reads: a whole file (compressed, multi-line, or small), or a byte range of whole
    lines of one, numbered by the lines and records before it."""

    path: str
    size: int
    begin: int = 0
    end: int | None = None  # None: the whole file, as a stream (decompressed if its name says so)
    names: tuple[str, ...] = ()  # a range's column names (from the config or the file's header)
    first_line: int = 0  # physical lines before `begin`
    first_record: int = 0  # records before `begin`
    skip: int = 0  # lines to leave out at `begin` (the file's start: skip_rows and the header)

    @property
    def byte_count(self) -> int:
        return (self.end if self.end is not None else self.size) - self.begin


class RangeReader:
    """`f`'s bytes `[begin, end)` as a stream, counting the line ends it hands out."""

    def __init__(self, f, begin: int, end: int):
        self.f, self.position, self.end, self.newlines = f, begin, end, 0

    def read(self, size: int) -> bytes:
        data = self.f.read_at(min(size, self.end - self.position), self.position) if self.position < self.end else b""
        self.position += len(data)
        self.newlines += data.count(b"\n")
        return data


def read_part(fs: pafs.FileSystem, part: FilePart, layout: CSVLayout) -> Iterator[pa.Table]:
    if part.end is None:
        with fs.open_input_stream(part.path) as f:  # compression detected from the file name
            yield from (read_multiline if layout.multiline else read_lines)(f, part.path, layout)
        return
    with fs.open_input_file(part.path) as f:
        yield from read_lines(RangeReader(f, part.begin, part.end), part.path, layout, part.names,
                              part.first_line, part.first_record, part.skip)


def read_parts(fs: pafs.FileSystem, parts: list[FilePart], layout: CSVLayout) -> Iterator[pa.Table]:
    for part in parts:
        yield from read_part(fs, part, layout)


def count_part(fs: pafs.FileSystem, part: FilePart, layout: CSVLayout) -> tuple[int, int]:
    """The physical lines and the records of a range, read as `read_lines` reads it."""
    with fs.open_input_file(part.path) as f:
        reader = RangeReader(f, part.begin, part.end)
        records = sum(int(line_bounds(np.frombuffer(chunk, np.uint8))[3].sum())
                      for chunk, _ in line_chunks(reader, layout.block_bytes, part.skip))
    return reader.newlines, records


def next_line_start(f, offset: int, size: int) -> int:
    """The first line start at or after `offset` (`offset` itself when the byte before it ends a line)."""
    if offset == 0:
        return 0
    position = offset - 1
    while position < size:
        window = f.read_at(min(1 << 16, size - position), position)
        at = window.find(b"\n")
        if at >= 0:
            return position + at + 1
        position += len(window)
    return size


Counter = Callable[[list[tuple]], list[tuple[int, int]]]


def range_count(size: int, layout: CSVLayout, ranges_at_least: int = 1) -> int:
    """How many ranges a file of `size` bytes is cut into: one per `range_bytes`, and at least
    `ranges_at_least` while each stays above `MIN_RANGE_BYTES` (a file of a few blocks keeps every core busy)."""
    return max(-(-size // layout.range_bytes), min(ranges_at_least, size // MIN_RANGE_BYTES), 1)


def plan_parts(fs: pafs.FileSystem, files: list[str], layout: CSVLayout, count: Counter | None = None,
               ranges_at_least: int = 1) -> list[FilePart]:
    """Each file whole, or (uncompressed, one record per line, and `range_count` more than one) cut into
    ranges at line starts, the first range holding every line to skip. `count` runs `count_part` over
    (fs, part, layout) tuples, on Ray tasks by default: the lines and records of each range number the next."""
    sizes = [info.size for info in fs.get_file_info(files)]
    whole, cut = [], []
    for path, size in zip(files, sizes):
        pieces = range_count(size, layout, ranges_at_least)
        if layout.multiline or pieces == 1 or strip_compression(path) != path:  # a compressed stream has no byte ranges
            whole.append(FilePart(path, size))
            continue
        with fs.open_input_file(path) as f:
            names = tuple(layout.column_names or layout.names_from_head(f.read_at(min(1 << 20, size), 0).removeprefix(BOM), path))
            after_skip = 0
            for _ in range(layout.lines_to_skip):
                after_skip = next_line_start(f, after_skip + 1, size)
            starts = sorted({0, *(b for b in (next_line_start(f, k * size // pieces, size) for k in range(1, pieces))
                                  if after_skip <= b < size)})
        ends = [*starts[1:], size]
        cut.append([FilePart(path, size, b, e, names, skip=layout.lines_to_skip if b == 0 else 0) for b, e in zip(starts, ends)])
    counts = iter((count or count_on_ray)([(fs, part, layout) for parts in cut for part in parts[:-1]]))
    parts_of = {part.path: [part] for part in whole}
    for parts in cut:
        line = record = 0
        numbered = []
        for part in parts:
            numbered.append(FilePart(part.path, part.size, part.begin, part.end, part.names, line, record, part.skip))
            if part is not parts[-1]:
                lines, records = next(counts)
                line, record = line + lines, record + records
        parts_of[parts[0].path] = numbered
    return [part for path in files for part in parts_of[path]]


def read_task_count(parts: list[FilePart], layout: CSVLayout, cpus: int) -> int:
    """Read tasks for `parts` (-1: Ray Data's choice). With at least two parts per CPU: as many tasks as
    Ray Data would choose (two per CPU, one per `range_bytes`), but never more than there are parts. Ray
    Data makes up for fewer tasks by splitting each task's output, and a split read cannot be fused with
    the cleaning step after it: unsplit, one task reads and annotates each part, with no copy through the
    object store in between. With fewer parts (one compressed file, a small file), that split is what
    lets the steps after the read run on every core, so Ray Data chooses."""
    if len(parts) < 2 * cpus:
        return -1
    return max(1, min(len(parts), max(2 * cpus, -(-sum(part.byte_count for part in parts) // layout.range_bytes))))


def count_on_ray(jobs: list[tuple]) -> list[tuple[int, int]]:
    if not jobs:
        return []
    import ray

    task = ray.remote(num_cpus=1)(count_part)
    counts = ray.get([task.remote(*job) for job in jobs])
    StaleNoCpuWarning.after_own_tasks()
    return counts


class QuarantiningCSVDatasource(Datasource):
    """Read steps over the planned parts, in file and range order: `parallelism` steps at most, each a
    run of consecutive parts."""

    def __init__(self, fs: pafs.FileSystem, parts: list[FilePart], layout: CSVLayout):
        super().__init__()
        self.fs, self.parts, self.layout = fs, parts, layout

    def get_name(self) -> str:
        return "QuarantiningCSV"

    def estimate_inmemory_data_size(self) -> int:
        return sum(part.byte_count for part in self.parts)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        groups = [g for g in np.array_split(np.arange(len(self.parts)), min(len(self.parts), max(parallelism, 1))) if len(g)]
        tasks = []
        for group in groups:
            parts = [self.parts[i] for i in group]
            metadata = BlockMetadata(num_rows=None, size_bytes=sum(p.byte_count for p in parts), input_files=[p.path for p in parts], exec_stats=None)
            tasks.append(ReadTask(functools.partial(read_parts, self.fs, parts, self.layout), metadata,
                                  per_task_row_limit=per_task_row_limit))
        return tasks


def line_chunks(f, block_bytes: int, skip: int, on_head: Callable[[bytes], None] | None = None) -> Iterator[tuple[bytes, int]]:
    """`f` in pieces of whole lines, read `block_bytes` at a time and each cut at its last line end (so
    which records come out does not depend on the block size), with the physical lines before each.
    The first `skip` lines (at a file's start: skip_rows and the header, after a BOM) are left out;
    `on_head` sees the text they begin."""
    pending, lines_seen = b"", 0
    while True:
        data = f.read(block_bytes)
        chunk = pending + data
        if data:
            cut = chunk.rfind(b"\n")
            if cut < 0 or chunk.count(b"\n", 0, cut + 1) < skip:
                pending = chunk  # not one whole line yet, or not every line to skip
                continue
            chunk, pending = chunk[:cut], chunk[cut + 1:]
        elif not chunk:
            break
        if skip:
            chunk = chunk.removeprefix(BOM)
            if on_head:
                on_head(chunk)
            rest = chunk.split(b"\n", skip)
            chunk = rest[skip] if len(rest) > skip else b""
            lines_seen, skip = skip, 0
            if not chunk:
                if data:
                    continue
                break
        yield chunk, lines_seen
        lines_seen += chunk.count(b"\n") + 1
        if not data:
            break


def read_lines(f, path: str, layout: CSVLayout, names: tuple[str, ...] = (), first_line: int = 0, first_record: int = 0,
               skip: int | None = None) -> Iterator[pa.Table]:
    """Reads `f` (a whole file, or a range of one after `first_line` lines holding `first_record`
    records) in pieces of whole lines; column names from `names`, the config, or the header."""
    names = tuple(names or layout.column_names or ())
    parser = RecordParser(layout, list(names), path) if names else None

    def on_head(head: bytes) -> None:
        nonlocal parser
        if parser is None:
            parser = RecordParser(layout, layout.names_from_head(head, path), path)

    record = first_record
    for chunk, lines_before in line_chunks(f, layout.block_bytes, layout.lines_to_skip if skip is None else skip, on_head):
        table = parser.parse(chunk, record, first_line + lines_before + 1)
        record += table.num_rows
        if table.num_rows:
            yield table


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
