"""Raw records -> canonical rows, with every failure kept as a reject row (never dropped).

Pure Python (no Ray): ``normalize_batch`` is what the Ray Data ``map_batches`` stage calls."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from .schema import NORMALIZED_SCHEMA, RAW_PREVIEW_CHARS, RejectRow
from .sources import Source

_EMPTY = {name: None for name in NORMALIZED_SCHEMA.names}


def decode_line(raw: bytes) -> dict[str, Any]:
    """One JSON Lines record from raw bytes; RejectRow for bad bytes, truncated or non-object JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RejectRow("invalid_utf8", f"byte {err.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RejectRow("invalid_json", f"{err.msg} at char {err.pos}") from None
    if not isinstance(value, dict):
        raise RejectRow("not_an_object", type(value).__name__)
    return value


def _preview(raw: bytes | dict[str, Any] | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw[:RAW_PREVIEW_CHARS].decode("utf-8", errors="replace")
    return json.dumps(raw, ensure_ascii=False, default=str)[:RAW_PREVIEW_CHARS]


def normalize_one(
    source: Source, raw: bytes | dict[str, Any], origin: str, split: str | None
) -> dict[str, Any]:
    """A canonical row, or a reject row carrying reason, detail, origin and a raw preview."""
    try:
        record = decode_line(raw) if isinstance(raw, bytes) else raw
        row = source.normalize(record, split)
    except RejectRow as reject:
        return {
            **_EMPTY,
            "source": source.name,
            "reject_reason": reject.reason,
            "reject_detail": reject.detail,
            "origin": origin,
            "raw": _preview(raw),
        }
    return {**_EMPTY, **row, "origin": origin}


def normalize_batch(batch: pa.Table, *, source: Source, split: str | None) -> pa.Table:
    """Ray Data stage: a batch of either raw lines (columns ``raw``, ``origin``, from the JSON
    Lines reader) or typed records (parquet, hub) -> a batch in NORMALIZED_SCHEMA."""
    if "raw" in batch.column_names and "origin" in batch.column_names:
        raws = batch.column("raw").to_pylist()
        origins = batch.column("origin").to_pylist()
    else:
        raws = batch.to_pylist()
        origins = [f"record:{i}" for i in range(len(raws))]
    rows = [normalize_one(source, raw, origin, split) for raw, origin in zip(raws, origins)]
    return pa.Table.from_pylist(rows, schema=NORMALIZED_SCHEMA)
