"""The one storage layer: every artifact is read and written here, by URI.

A URI is a local path, `file://...`, `s3://...`, `gs://...` (when pyarrow has that filesystem), or any
other scheme pyarrow's filesystems open. Nothing here needs Ray, so drivers, Ray workers, Serve replicas
and `pipeline predict` use the same functions. Ray Train and Tune take the same URIs as `storage_path`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import re
import uuid
from typing import Any, Callable, TypeVar

import pyarrow.fs as pafs

from pipeline.errors import StorageError

F = TypeVar("F", bound=Callable)


def clear_errors(fn: F) -> F:
    """A filesystem's OSError (no bucket, no credentials, no file) as a StorageError naming the URI."""

    @functools.wraps(fn)
    def wrapper(uri, *args, **kwargs):
        try:
            return fn(uri, *args, **kwargs)
        except (OSError, ValueError) as exc:
            raise StorageError(redact(f"{uri if isinstance(uri, str) else uri[1]}: {exc}")) from exc

    return wrapper  # type: ignore[return-value]


USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
SECRET_PARAMETER = re.compile(r"([?&][^=&\s'\"]*(?:key|secret|token|password|credential|signature)[^=&\s'\"]*=)[^&\s'\"]*",
                              re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with credentials inside URIs (`s3://KEY:SECRET@bucket`, `?secret_key=...`) replaced by `***`:
    for logs, reports, metrics.json and error messages."""
    return SECRET_PARAMETER.sub(r"\1***", USERINFO.sub(r"\1***@", str(text)))


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def resolve(uri: str | os.PathLike) -> str:
    """An absolute local path, or the URI unchanged: what to store in metrics.json and hand to actors."""
    uri = str(uri)
    if is_remote(uri):
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri[len("file://"):] if uri.startswith("file://") else uri))


@clear_errors
def filesystem(uri: str | tuple[pafs.FileSystem, str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of `uri`; a (filesystem, path) pair, as Ray's checkpoints carry, passes through."""
    if isinstance(uri, tuple):
        return uri
    if not is_remote(uri):
        return pafs.LocalFileSystem(), resolve(uri)
    return pafs.FileSystem.from_uri(uri)


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for Ray Train and Tune: the URI itself, or, when it carries
    credentials, the bare path and its filesystem, so that Ray's own logs never show them."""
    if is_remote(uri) and redact(uri) != uri:
        fs, path = filesystem(uri)
        return path, fs
    return uri, None


def join(uri: str, *parts: str) -> str:
    return posixpath.join(str(uri), *parts) if is_remote(uri) else os.path.join(str(uri), *parts)


@clear_errors
def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


@clear_errors
def make_dirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


@clear_errors
def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


@clear_errors
def write_bytes(uri: str, data: bytes) -> None:
    """Whole-file write. Local files go through a temporary name and a rename, so a reader (Serve polling
    `production.json`) never sees half a file; object stores publish an object only once it is complete."""
    fs, path = filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    # A name of its own per write: concurrent writers of one file (two promotions) never share a temporary.
    target = f"{path}.{uuid.uuid4().hex[:12]}.tmp" if isinstance(fs, pafs.LocalFileSystem) else path
    with fs.open_output_stream(target) as fh:
        fh.write(data)
    if target != path:
        fs.move(target, path)


def write_text(uri: str, text: str) -> None:
    """Text artifacts (JSON, YAML, CSV) never carry credentials: URIs in them are redacted."""
    write_bytes(uri, redact(text).encode())


def json_bytes(obj: Any) -> bytes:
    """`obj` as redacted JSON, as `write_json` writes it (encode once what is written many times)."""
    return redact(json.dumps(obj, indent=2, default=json_default)).encode()


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json_bytes(obj))


def json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def save_figure(fig, uri: str) -> str:
    """A matplotlib figure as PNG at `uri` (rendered in memory: no local file on the way)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    write_bytes(uri, buf.getvalue())
    return uri


@clear_errors
def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def copy_file(src: str, dst: str) -> None:
    write_bytes(dst, read_bytes(src))


@clear_errors
def copy_dir(src: str | tuple[pafs.FileSystem, str], dst: str) -> None:
    """Replaces `dst` with a copy of `src` (a URI, or a (filesystem, path) pair such as a Ray checkpoint's)."""
    src_fs, src_path = filesystem(src)
    dst_fs, dst_path = filesystem(dst)
    delete_dir(dst)
    dst_fs.create_dir(dst_path, recursive=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


@clear_errors
def rename(src: str, dst: str) -> None:
    """Moves `src` to `dst` on one filesystem (a rename on local disks: all at once)."""
    fs, src_path = filesystem(src)
    _, dst_path = filesystem(dst)
    fs.move(src_path, dst_path)


@clear_errors
def list_dirs(uri: str) -> list[str]:
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


@clear_errors
def list_files(uri: str) -> list[str]:
    """Every file under `uri`, as paths relative to it."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(posixpath.relpath(i.path, path) for i in infos if i.type == pafs.FileType.File)
