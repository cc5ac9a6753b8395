"""Ingest: any URI (local path, glob, s3://...) and format into a Ray Dataset.

Missing inputs fail here with one message naming the path, before any Ray work starts.
"""

from __future__ import annotations

import fnmatch
import posixpath
from typing import Any

import pyarrow.fs as pafs

from pipeline.errors import DataError

FORMAT_BY_EXTENSION = {
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".json": "json",
    ".jsonl": "json", ".txt": "text", ".npz": "numpy", ".npy": "numpy",
    ".png": "images", ".jpg": "images", ".jpeg": "images", ".bmp": "images", ".gif": "images",
}
FORMATS = ("csv", "tsv", "parquet", "json", "text", "images", "numpy")


def resolve_paths(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """Expands a path, directory or glob into files; raises DataError naming what is missing."""
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pafs.ArrowInvalid, ValueError):  # a plain relative path
        fs, path = pafs.LocalFileSystem(), posixpath.abspath(uri)
    except OSError as exc:
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
    found = {FORMAT_BY_EXTENSION.get(posixpath.splitext(f)[1].lower()) for f in files}
    found.discard(None)
    if len(found) != 1:
        raise DataError(f"cannot tell the format from the file names ({files[0]} ...); pass --format / data.format")
    return found.pop()


def read_dataset(uri: str, fmt: str = "auto", options: dict[str, Any] | None = None):
    """Reads `uri` into a Ray Dataset; `options` are reader options (e.g. column names for CSV)."""
    import ray.data

    options = dict(options or {})
    fs, files = resolve_paths(uri)
    fmt = infer_format(files, fmt)
    if fmt == "parquet":
        return ray.data.read_parquet(files, filesystem=fs)
    if fmt == "json":
        return ray.data.read_json(files, filesystem=fs, lines=True)
    if fmt == "text":
        return ray.data.read_text(files, filesystem=fs, include_paths=True)
    if fmt == "images":
        return ray.data.read_images(files, filesystem=fs, include_paths=True, mode=options.get("mode", "L"))
    if fmt == "numpy":
        return read_numpy_arrays(fs, files)
    raise DataError(f"format {fmt!r} is not readable by this reader")


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
