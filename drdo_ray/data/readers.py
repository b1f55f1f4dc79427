"""Where rows come from: local files, object storage (s3://, gs://) or the Hugging Face hub,
each as a Ray Data dataset.

JSON Lines are read as raw bytes, one row per line, so that a truncated line, a non-UTF-8
byte or a mistyped field reaches the normalizer and becomes a counted reject instead of
failing the whole read (Arrow's JSON reader would stop at the first bad line, and would
refuse to unify a field typed differently in two files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray
from ray.data.datasource import FileBasedDatasource

from ..artifacts import is_hub_id, is_remote
from ..errors import UserError
from .sources import Source, sample_path

if TYPE_CHECKING:
    from ray.data import Dataset

TEXT_EXTENSIONS = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_EXTENSIONS = (".parquet",)
LINES_PER_BLOCK = 4096
_CHUNK_BYTES = 1 << 20


def _iter_lines(f: Any) -> Iterator[bytes]:
    """Lines of a pyarrow stream (compressed streams have no readline)."""
    tail = b""
    while chunk := f.read(_CHUNK_BYTES):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


class RawJsonRecordsDatasource(FileBasedDatasource):
    """Rows ``{raw: bytes, origin: "file:line"}`` from JSON Lines files, or from a JSON array
    file (one row per element). Streams a file in blocks of LINES_PER_BLOCK lines."""

    def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
        name = path.rsplit("/", 1)[-1]
        lines = _iter_lines(f)
        first = next(lines, None)
        if first is None:
            return
        if first.lstrip().startswith(b"[") and ".json" in name and ".jsonl" not in name:
            yield from self._read_array(first + b"\n" + b"\n".join(lines), name)
            return
        raws: list[bytes] = []
        origins: list[str] = []
        for number, line in enumerate([first], start=1):
            raws, origins = self._add(raws, origins, line, f"{name}:{number}")
        for number, line in enumerate(lines, start=2):
            raws, origins = self._add(raws, origins, line, f"{name}:{number}")
            if len(raws) >= LINES_PER_BLOCK:
                yield pa.table({"raw": pa.array(raws, pa.binary()), "origin": origins})
                raws, origins = [], []
        if raws:
            yield pa.table({"raw": pa.array(raws, pa.binary()), "origin": origins})

    @staticmethod
    def _add(
        raws: list[bytes], origins: list[str], line: bytes, origin: str
    ) -> tuple[list[bytes], list[str]]:
        line = line.rstrip(b"\r")
        if line.strip():  # blank lines separate nothing and are no records
            raws.append(line)
            origins.append(origin)
        return raws, origins

    @staticmethod
    def _read_array(data: bytes, name: str) -> Iterator[pa.Table]:
        try:
            items = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            # The whole file is one unparseable value: one reject row that says so.
            yield pa.table({"raw": pa.array([data[:4096]], pa.binary()), "origin": [f"{name}:1"]})
            return
        raws = [json.dumps(item, ensure_ascii=False).encode("utf-8") for item in items]
        for start in range(0, len(raws), LINES_PER_BLOCK):
            chunk = raws[start : start + LINES_PER_BLOCK]
            origins = [f"{name}[{i}]" for i in range(start, start + len(chunk))]
            yield pa.table({"raw": pa.array(chunk, pa.binary()), "origin": origins})


def _local_files(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)]
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_EXTENSIONS + PARQUET_EXTENSIONS)
    )
    if not files:
        raise UserError(f"no .jsonl, .json or .parquet files under {path}")
    return [str(p) for p in files]


def _remote_files(uri: str) -> list[str]:
    """Files under an object-store URI (a file or a prefix), through pyarrow's filesystems."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [uri]
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"input path does not exist: {uri}")
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"cannot list {uri}: {err}") from err
    scheme = uri.split("://", 1)[0]
    files = sorted(
        f"{scheme}://{i.path}"
        for i in infos
        if i.is_file and i.path.endswith(TEXT_EXTENSIONS + PARQUET_EXTENSIONS)
    )
    if not files:
        raise UserError(f"no .jsonl, .json or .parquet files under {uri}")
    return files


def _format_of(files: list[str]) -> str:
    kinds = {
        "parquet" if f.endswith(PARQUET_EXTENSIONS) else "text" if f.endswith(TEXT_EXTENSIONS) else "?"
        for f in files
    }
    if "?" in kinds:
        bad = next(f for f in files if not f.endswith(TEXT_EXTENSIONS + PARQUET_EXTENSIONS))
        raise UserError(f"unsupported file type: {bad} (expected .jsonl, .json or .parquet)")
    if len(kinds) > 1:
        raise UserError("input mixes parquet and JSON files; point at one format")
    return kinds.pop()


def describe_input(source: Source, spec: str) -> tuple[str, str]:
    """(kind, location): kind is "sample", "files" (local or remote) or "hub"."""
    if spec == "sample":
        return "sample", str(sample_path(source))
    if spec.startswith("hub:"):
        return "hub", spec[4:]
    if is_remote(spec):
        return "files", spec
    spec = spec.removeprefix("file://")
    if Path(spec).exists():
        return "files", str(Path(spec).resolve())
    if is_hub_id(spec) and not spec.endswith(TEXT_EXTENSIONS + PARQUET_EXTENSIONS):
        return "hub", spec
    raise UserError(f"input path does not exist: {spec}")


def read_rows(
    source: Source, spec: str, *, hub_split: str | None = None, streaming: bool | None = None
) -> Dataset:
    """A Ray dataset of raw rows for ``source`` from ``spec`` (a path, ``sample``, or a hub id)."""
    kind, location = describe_input(source, spec)
    if kind == "hub":
        return _read_hub(source, location, hub_split or source.hub_split, streaming)
    files = (
        _local_files(Path(location))
        if kind == "sample" or not is_remote(location)
        else _remote_files(location)
    )
    fmt = _format_of(files)
    if fmt == "parquet":
        return ray.data.read_parquet(files)
    return ray.data.read_datasource(RawJsonRecordsDatasource(files, file_extensions=None))


def _read_hub(source: Source, hub_id: str, split: str, streaming: bool | None) -> Dataset:
    import datasets  # heavy import, only on the hub path

    config = source.hub_config if hub_id == source.hub_id else None
    revision = source.hub_revision if hub_id == source.hub_id else None
    stream = source.streaming if streaming is None else streaming
    try:
        hf = datasets.load_dataset(hub_id, config, split=split, revision=revision, streaming=stream)
    except Exception as err:  # network, auth, unknown id: one clear line for the user
        raise UserError(
            f"could not load {hub_id} ({config or 'default'}, split {split}) from the hub: {err}"
        ) from err
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return ray.data.from_huggingface(hf)
    # Offline (a local hub cache, an air-gapped cluster): Ray's from_huggingface first asks the
    # hub for parquet URLs and fails on the network error instead of falling back. Convert here.
    if isinstance(hf, datasets.IterableDataset):
        return ray.data.from_items(list(hf))
    return ray.data.from_arrow(hf.with_format("arrow")[:])
