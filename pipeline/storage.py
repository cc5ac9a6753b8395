"""Paths and URIs alike: local directories, s3://, gs://, anything pyarrow's filesystems open."""

from __future__ import annotations

import os
import posixpath
import tempfile

import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if not is_remote(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri, *parts) if is_remote(uri) else os.path.join(uri, *parts)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read().decode()


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as fh:
        fh.write(text.encode())
    fs.move(tmp, path)  # readers never see half a pointer file


def copy_dir(src: str, dst: str) -> None:
    src_fs, src_path = filesystem(src)
    dst_fs, dst_path = filesystem(dst)
    dst_fs.create_dir(dst_path, recursive=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


def local_copy(uri: str) -> str:
    """A local directory with the contents of `uri` (itself, when it is already local)."""
    if not is_remote(uri):
        return filesystem(uri)[1]
    target = tempfile.mkdtemp(prefix="pipeline-model-")
    copy_dir(uri, target)
    return target


def list_dirs(uri: str) -> list[str]:
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)
