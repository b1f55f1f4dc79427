"""Run-directory I/O that works the same for local paths and object storage (s3://, gs://),
through fsspec. Ray Data writes datasets itself; this is for the small files beside them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import fsspec


def _fs(uri: str) -> tuple[Any, str]:
    return fsspec.core.url_to_fs(uri)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def remove(uri: str) -> None:
    fs, path = _fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def makedirs(uri: str) -> None:
    fs, path = _fs(uri)
    fs.makedirs(path, exist_ok=True)


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.exists(path)


def write_json(uri: str, data: Any) -> None:
    fs, path = _fs(uri)
    with fs.open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(uri: str) -> Any:
    fs, path = _fs(uri)
    with fs.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(uri: str, rows: Iterable[dict[str, Any]]) -> int:
    fs, path = _fs(uri)
    count = 0
    with fs.open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def arrow_filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for ``uri`` (for readers that want one, e.g. pyarrow.dataset)."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def upload_dir(local: str, uri: str) -> None:
    """Copy a local folder to ``uri`` (no-op when they are the same local folder)."""
    fs, path = _fs(uri)
    fs.put(local.rstrip("/") + "/", path, recursive=True)


def open_binary(uri: str) -> Any:
    """A binary read handle (for pyarrow readers of one file)."""
    fs, path = _fs(uri)
    return fs.open(path, "rb")
