"""`drdo-ray data prepare`: read a source, normalize to canonical rows, tokenize and filter
by length, (TL;DR) label easy/hard, and write

    OUT/data/*.parquet   the kept rows
    OUT/rejects.jsonl    every rejected row with its reason, detail, origin and a raw preview
    OUT/stats.json       rows read / kept / rejected by reason, split statistics, throughput

All row-wise work runs as Ray Data ``map_batches`` stages; only per-row metadata (a few
numeric columns) and the rejects come back to the driver."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data
from rich.console import Console

from .. import storage
from ..config import PrepareConfig
from ..errors import UserError
from ..ray_runtime import ensure_ray
from . import tldr_split
from .normalize import normalize_batch
from .readers import describe_input, read_rows
from .schema import INTERNAL_COLUMNS, TOKEN_FIELDS
from .sources import SOURCES
from .tokenize import Featurize


def _valid(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch["reject_reason"]))


def _invalid(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch["reject_reason"]))


def _label_difficulty(batch: pa.Table, conf_p50: float, dist_p50: float, split: str) -> pa.Table:
    confidence = batch["confidence"].to_numpy(zero_copy_only=False).astype(float)
    distance = batch["distance"].to_numpy(zero_copy_only=False).astype(float)
    labels = tldr_split.assign(confidence, distance, conf_p50, dist_p50)
    batch = batch.append_column("difficulty", pa.array(labels.tolist(), pa.string()))
    return batch.filter(pa.array(tldr_split.in_split(labels, split)))


def _featurized(cfg: PrepareConfig, source: Any, input_kind: str) -> ray.data.Dataset:
    """The source's rows read, normalized to canonical rows, tokenized and length-checked (each
    row valid, or carrying its reject reason), materialized."""
    split = cfg.hub_split or (source.hub_split if input_kind == "hub" else None)
    rows = read_rows(source, cfg.input, hub_split=cfg.hub_split, streaming=cfg.streaming)
    rows = rows.map_batches(
        normalize_batch, fn_kwargs={"source": source, "split": split}, batch_format="pyarrow", batch_size=1024
    )
    return rows.map_batches(
        Featurize,
        fn_constructor_args=(cfg.tokenizer,),
        fn_constructor_kwargs={
            "max_prompt_length": cfg.max_prompt_length,
            "max_length": cfg.max_length,
            "pair_distance": source.name == "tldr",
            "limit_responses": source.kind != "prompts",
        },
        batch_format="pyarrow",
        batch_size=256,
        compute=ray.data.ActorPoolStrategy(size=cfg.featurize_actors),
    ).materialize()


def _tldr_difficulty(
    cfg: PrepareConfig, kept: ray.data.Dataset, valid: Any
) -> tuple[ray.data.Dataset, dict[str, Any], int]:
    """TL;DR: the easy/hard thresholds of the valid rows, each row's label, the chosen split's
    rows; (those rows, stats.json's ``tldr`` section, their count)."""
    confidence = valid["confidence"].to_numpy(dtype=float, na_value=np.nan)
    distance = valid["distance"].to_numpy(dtype=float, na_value=np.nan)
    conf_p50, dist_p50 = tldr_split.thresholds(confidence, distance)
    difficulty = tldr_split.assign(confidence, distance, conf_p50, dist_p50)
    section = {
        "split": cfg.tldr_split,
        "confidence_p50": conf_p50,
        "distance_p50": dist_p50,
        "distance_tokens": "tokenizer" if cfg.tokenizer else "whitespace",
        "tie_rule": "a value equal to its 50th percentile counts as high (>=)",
        "splits": tldr_split.split_stats(confidence, distance, difficulty),
        "difficulty_counts": dict(Counter(difficulty.tolist())),
    }
    kept = kept.map_batches(
        _label_difficulty,
        fn_kwargs={"conf_p50": conf_p50, "dist_p50": dist_p50, "split": cfg.tldr_split},
        batch_format="pyarrow",
    )
    return kept, section, int(tldr_split.in_split(difficulty, cfg.tldr_split).sum())


def prepare(cfg: PrepareConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the preparation; returns the stats written to OUT/stats.json."""
    console = console or Console(stderr=True)
    source = SOURCES[cfg.source]
    if cfg.tldr_split != "full" and source.name != "tldr":
        raise UserError(f"--tldr-split {cfg.tldr_split} applies to the tldr source only")
    if cfg.max_prompt_length >= cfg.max_length:
        raise UserError("max_prompt_length must be smaller than max_length")
    input_kind, location = describe_input(source, cfg.input)
    ensure_ray()
    started = time.perf_counter()  # throughput excludes cluster start-up
    console.print(f"[bold]prepare[/] {source.name} from {input_kind} {location}")
    rows = _featurized(cfg, source, input_kind)

    meta = rows.select_columns(["reject_reason", "confidence", "distance", "equal_scores"]).to_pandas()
    rows_read = len(meta)
    reasons = Counter(meta["reject_reason"].dropna().tolist())
    valid = meta[meta["reject_reason"].isna()]
    if rows_read == 0:
        raise UserError(f"{location} holds no rows")
    if valid.empty:
        top = ", ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
        raise UserError(f"{location}: none of {rows_read} rows is valid ({top}); see the reasons above")

    for target in ("data", "rejects.jsonl", "stats.json"):
        storage.remove(storage.join(cfg.out, target))
    storage.makedirs(cfg.out)
    rejects_written = storage.write_jsonl(
        storage.join(cfg.out, "rejects.jsonl"),
        (
            {k: r[k] for k in ("reject_reason", "reject_detail", "origin", "id", "raw")}
            for r in rows.map_batches(_invalid, batch_format="pyarrow").iter_rows()
        ),
    )
    kept = rows.map_batches(_valid, batch_format="pyarrow")
    if source.name == "tldr":
        kept, tldr, rows_in_split = _tldr_difficulty(cfg, kept, valid)
        extra = {"tldr": tldr}
    else:
        kept, extra, rows_in_split = kept.drop_columns(["distance"]), {}, len(valid)  # a TL;DR-only feature
    drop = list(INTERNAL_COLUMNS)
    if not cfg.tokenizer:
        drop += [name for name, _ in TOKEN_FIELDS if name != "distance"]
    kept.drop_columns(drop).write_parquet(storage.join(cfg.out, "data"))

    elapsed = time.perf_counter() - started
    stats = {
        "source": source.name,
        "input": location,
        "input_kind": input_kind,
        "tokenizer": cfg.tokenizer,
        "max_prompt_length": cfg.max_prompt_length,
        "max_length": cfg.max_length,
        "rows_read": rows_read,
        "rows_valid": len(valid),
        "rows_written": rows_in_split,
        "rows_rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "equal_score_pairs": int(valid["equal_scores"].fillna(False).astype(bool).sum()),
        **extra,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(rows_read / elapsed, 1),
        "outputs": {
            "data": storage.join(cfg.out, "data"),
            "rejects": storage.join(cfg.out, "rejects.jsonl"),
            "stats": storage.join(cfg.out, "stats.json"),
        },
    }
    assert rejects_written == stats["rows_rejected"], "every reject must reach rejects.jsonl"
    storage.write_json(storage.join(cfg.out, "stats.json"), stats)
    return stats
