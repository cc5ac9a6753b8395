"""Ingest: any URI (local path, glob, s3://...) and format into a Ray Dataset.

Missing inputs fail here with one message naming the path, before any Ray work starts.
"""

from __future__ import annotations

import fnmatch
import posixpath

import pyarrow.fs as pafs

from pipeline.config import TableOptions
from pipeline.errors import DataError

FORMAT_BY_EXTENSION = {
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".json": "json",
    ".jsonl": "json", ".txt": "text", ".npz": "numpy", ".npy": "numpy",
    ".png": "images", ".jpg": "images", ".jpeg": "images", ".bmp": "images", ".gif": "images",
}
FORMATS = ("csv", "tsv", "parquet", "json", "text", "images", "numpy")


def resolve_paths(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """Expands a path, directory or glob into files; raises DataError naming what is missing."""
    from pipeline import storage

    try:
        fs, path = storage.filesystem(uri)  # a relative path resolves against the working directory
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open {uri}: {exc}") from None
    try:
        if any(ch in path for ch in "*?["):
            base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] or "/"
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            files = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path))
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
            files = sorted(i.path for i in infos if i.type == pafs.FileType.File and not posixpath.basename(i.path).startswith((".", "_")))
            if not files:
                raise DataError(f"directory is empty: {uri}")
            return fs, files
        return fs, [path]
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
                 image_mode: str = "L"):
    """Reads `uri` into a Ray Dataset.

    `options`: how to read CSV/TSV (column names, header, quoting) and which markers mean missing;
    `image_mode`: L (grey) or RGB for image files;
    `schema` (column -> type) is checked before any Ray work: a source that lacks a declared column or
    holds it in an incompatible type fails with one message listing every such column.
    """
    import ray.data

    options = options or TableOptions()
    fs, files = resolve_paths(uri)
    fmt = infer_format(files, fmt)
    if fmt in ("csv", "tsv"):
        from pipeline.data.csv_source import CSVLayout, QuarantiningCSVDatasource

        layout = CSVLayout(options, "\t" if fmt == "tsv" else ",")
        if schema:
            check_csv_schema(uri, fs, files[0], layout, schema, options.na_values)
        return ray.data.read_datasource(QuarantiningCSVDatasource(files, layout, filesystem=fs))
    if fmt == "parquet":
        ds = ray.data.read_parquet(files, filesystem=fs)
    elif fmt == "json":
        ds = ray.data.read_json(files, filesystem=fs)  # newline-delimited JSON (pyarrow reader)
    elif fmt == "text":
        ds = ray.data.read_text(files, filesystem=fs, include_paths=True)
    elif fmt == "images":
        return ray.data.read_images(files, filesystem=fs, include_paths=True, mode=image_mode)
    else:
        return read_numpy_arrays(fs, files)
    if schema:
        from pipeline.data.schema import arrow_kind, check_columns

        arrow_schema = ds.schema().base_schema if hasattr(ds.schema(), "base_schema") else ds.schema()
        check_columns(uri, {f.name: arrow_kind(f.type) for f in arrow_schema}, schema)
    return ds


def check_csv_schema(uri: str, fs, first_file: str, layout, schema: dict[str, str], na_values: list[str]) -> None:
    """Column names from the header (or config), types from the first rows of the first file."""
    import io

    import pandas as pd

    from pipeline.data.schema import NUMERIC, check_columns, coerce

    with fs.open_input_stream(first_file) as fh:
        head = fh.read(1 << 16)
    names = layout.names_from_head(head, first_file)
    lines = head.decode("utf-8", errors="replace").splitlines()[layout.lines_to_skip:-1][:200]
    found = {name: "string" for name in names}
    try:
        sample = pd.read_csv(io.StringIO("\n".join(lines)), names=names, header=None, dtype=str,
                             sep=layout.delimiter, quoting=3 if layout.quote_char is False else 0, on_bad_lines="skip")
    except (ValueError, pd.errors.ParserError):
        sample = pd.DataFrame(columns=names)
    for column, kind in schema.items():
        if kind in NUMERIC and column in sample and len(sample):
            _, bad = coerce(sample[column], kind, set(na_values))
            present = sample[column].notna().to_numpy()
            if present.any() and bad[present].all():  # not one value is a number: the column is mistyped
                found[column] = "text"
    check_columns(uri, found, schema)


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
