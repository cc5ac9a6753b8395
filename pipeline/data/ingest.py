"""Ingest: any URI (local path, glob, s3://...) and format into a Ray Dataset.

Missing inputs fail here with one message naming the path, before any Ray work starts.
"""

from __future__ import annotations

import fnmatch
import posixpath

import pyarrow.fs as pafs

from pipeline.config import TableOptions
from pipeline.data.schema import check_columns
from pipeline.errors import DataError

FORMAT_BY_EXTENSION = {
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".json": "json",
    ".jsonl": "json", ".txt": "text", ".npz": "numpy", ".npy": "numpy",
    ".png": "images", ".jpg": "images", ".jpeg": "images", ".bmp": "images", ".gif": "images",
}
HEAD_BYTES = 1 << 16  # read from each file to check its columns
SAMPLE_LINES = 200  # lines of that head whose values decide whether a numeric column is mistyped
FORMATS = ("csv", "tsv", "parquet", "json", "text", "images", "numpy")


def resolve_paths(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """Expands a path, directory or glob into files; raises DataError naming what is missing."""
    fs, infos = resolve_files(uri)
    return fs, [info.path for info in infos]


def source_bytes(*uris: str | None) -> int:
    """Bytes on storage of the files behind `uris` (None and "builtin", the small embedded sets: 0)."""
    return sum(info.size or 0 for uri in uris if uri and uri != "builtin" for info in resolve_files(uri)[1])


def cluster_cpus() -> int:
    """The CPUs of the Ray cluster joined, or of the local one that Ray Data starts when none is."""
    import os

    import ray

    return int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else os.cpu_count() or 1


def resolve_files(uri: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """`resolve_paths` with each file's info (its size among them), from the same listing."""
    from pipeline import storage

    try:
        fs, path = storage.filesystem(uri)  # a relative path resolves against the working directory
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open {uri}: {exc}") from None
    try:
        if any(ch in path for ch in "*?["):
            base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] or "/"
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            files = sorted((i for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)), key=lambda i: i.path)
            if not files:
                raise DataError(f"no files match {uri}")
            return fs, files
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            bucket = path.split("/")[0]
            if isinstance(fs, pafs.S3FileSystem) and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise DataError(f"bucket not found: {bucket} (reading {uri})")
            raise DataError(f"input not found: {uri}")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = sorted((i for i in infos if i.type == pafs.FileType.File and not posixpath.basename(i.path).startswith((".", "_"))),
                           key=lambda i: i.path)
            if not files:
                raise DataError(f"directory is empty: {uri}")
            return fs, files
        return fs, [info]
    except OSError as exc:  # e.g. S3 bucket missing or unreachable
        raise DataError(f"cannot read {uri}: {first_line(exc)}") from None


def infer_format(files: list[str], fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    found = {FORMAT_BY_EXTENSION.get(posixpath.splitext(strip_compression(f))[1].lower()) for f in files}
    found.discard(None)
    if len(found) != 1:
        raise DataError(f"cannot tell the format from the file names ({files[0]} ...); pass --format / data.format")
    return found.pop()


def strip_compression(path: str) -> str:
    root, ext = posixpath.splitext(path)
    return root if ext.lower() in (".gz", ".bz2", ".zst", ".lz4", ".br") else path


def read_dataset(uri: str, fmt: str = "auto", options: TableOptions | None = None, schema: dict[str, str] | None = None,
                 image_mode: str = "L", block_bytes: int | None = None, range_bytes: int | None = None):
    """Reads `uri` into a Ray Dataset.

    `options`: how to read CSV/TSV (column names, header, quoting) and which markers mean missing;
    `image_mode`: L (grey) or RGB for image files;
    `schema` (column -> type) is checked against every file before any Ray work: a file that lacks a
    declared column or holds it in an incompatible type fails with one message listing every such column;
    `block_bytes`: how much of a CSV file one read step parses at a time, `range_bytes`: how much of a
    large uncompressed CSV file one read task takes (results depend on neither).
    """
    import ray.data

    options = options or TableOptions()
    fs, files = resolve_paths(uri)
    fmt = infer_format(files, fmt)
    if fmt in ("csv", "tsv"):
        from pipeline.data.csv_source import CSVLayout, QuarantiningCSVDatasource, plan_parts, read_task_count

        sizes = {k: v for k, v in (("block_bytes", block_bytes), ("range_bytes", range_bytes)) if v}
        layout = CSVLayout(options, "\t" if fmt == "tsv" else ",", **sizes)
        found = each_file(files, lambda path: csv_columns(fs, path, layout, schema or {}, options.na_values))
        for path, columns in found.items():
            check_columns(path, columns, schema or {})
        check_same_columns(found)
        cpus = cluster_cpus()
        parts = plan_parts(fs, files, layout, ranges_at_least=2 * cpus)
        return ray.data.read_datasource(QuarantiningCSVDatasource(fs, parts, layout),
                                        override_num_blocks=read_task_count(parts, layout, cpus))
    if fmt == "parquet":
        ds = ray.data.read_parquet(files, filesystem=fs)
        found = each_file(files, lambda path: parquet_columns(fs, path))
    elif fmt == "json":
        ds = ray.data.read_json(files, filesystem=fs)  # newline-delimited JSON (pyarrow reader)
        found = each_file(files, lambda path: json_columns(fs, path))
    elif fmt == "text":
        return ray.data.read_text(files, filesystem=fs, include_paths=True)
    elif fmt == "images":
        return ray.data.read_images(files, filesystem=fs, include_paths=True, mode=image_mode)
    else:
        return read_numpy_arrays(fs, files)
    if schema:  # every file: one with a column missing or mistyped fails here, named
        for path, columns in found.items():
            check_columns(path, columns, schema)
    return ds


def each_file(files: list[str], inspect) -> dict[str, dict[str, str]]:
    """`inspect(path)` for every file (a few at a time: each is one small read), in file order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        return dict(zip(files, pool.map(inspect, files)))


def check_same_columns(found: dict[str, dict[str, str]]) -> None:
    """Delimited files of one source must name the same columns in the same order."""
    (first, columns), *rest = found.items()
    for path, other in rest:
        if list(other) != list(columns):
            raise DataError(f"{path} has columns {', '.join(other)}, but {first} has {', '.join(columns)}; "
                            "every file of a source needs the same header")


def csv_columns(fs, path: str, layout, schema: dict[str, str], na_values: list[str]) -> dict[str, str]:
    """Column names from the header (or config); a declared numeric column in which no value of the
    first lines parses as a number is reported as `text` (mistyped)."""
    from pipeline.data.csv_source import BOM, RecordParser
    from pipeline.data.schema import NUMERIC, coerce

    try:
        with fs.open_input_stream(path) as fh:
            head = fh.read(HEAD_BYTES).removeprefix(BOM)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from None
    names = layout.names_from_head(head, path)
    lines = head.split(b"\n")[layout.lines_to_skip:-1][:SAMPLE_LINES]
    found = {name: "string" for name in names}
    if not lines:
        return found
    sample = RecordParser(layout, names, path).parse(b"\n".join(lines), 0, 1).to_pandas()
    for column, kind in schema.items():
        if kind in NUMERIC and column in sample and len(sample):
            _, bad = coerce(sample[column], kind, set(na_values))
            present = sample[column].notna().to_numpy()
            if present.any() and bad[present].all():  # not one value is a number: the column is mistyped
                found[column] = "text"
    return found


def parquet_columns(fs, path: str) -> dict[str, str]:
    import pyarrow.parquet as pq

    from pipeline.data.schema import arrow_kind

    try:
        return {f.name: arrow_kind(f.type) for f in pq.read_schema(path, filesystem=fs)}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as Parquet: {first_line(exc)}") from None


def json_columns(fs, path: str) -> dict[str, str]:
    """The columns of the first lines of a JSON-lines file, as pyarrow infers them."""
    import io

    import pyarrow.json as pajson

    from pipeline.data.schema import arrow_kind

    try:
        with fs.open_input_stream(path) as fh:
            head = fh.read(HEAD_BYTES)
        lines = head.split(b"\n")
        sample = b"\n".join(lines[:-1] if len(lines) > 1 else lines)
        schema = pajson.read_json(io.BytesIO(sample)).schema if sample.strip() else []
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as JSON lines: {first_line(exc)}") from None
    return {f.name: arrow_kind(f.type) for f in schema}


def read_numpy_arrays(fs: pafs.FileSystem, files: list[str]):
    """`.npz` files with equally long arrays (one column each), or `.npy` files (column `data`)."""
    import io

    import numpy as np
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    tables = []
    for path in files:
        with fs.open_input_file(path) as fh:
            payload = io.BytesIO(fh.read())
        try:
            loaded = np.load(payload, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path} is not a NumPy file without pickled objects: {exc}") from None
        arrays = dict(loaded) if isinstance(loaded, np.lib.npyio.NpzFile) else {"data": loaded}
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"{path}: arrays have different lengths {lengths}")
        columns = {k: (ArrowTensorArray.from_numpy(v) if v.ndim > 1 else pa.array(v)) for k, v in arrays.items()}
        tables.append(pa.table(columns))
    return ray.data.from_arrow(tables)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
