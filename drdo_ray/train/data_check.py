"""Everything about a training dataset that can be checked before a worker starts: it exists,
it is tokenized, it holds pairs when the stage needs pairs, it carries the score columns the
loss reads, and it has enough rows for one optimizer step."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.dataset as pads

from .. import storage
from ..config import TrainConfig
from ..errors import UserError
from .loop import plan, reduction_of, score_columns


@dataclass(frozen=True)
class DataInfo:
    path: str  # the parquet folder
    num_rows: int
    columns: tuple[str, ...]  # the columns training reads
    extra: tuple[str, ...]  # score columns passed to the loss
    edpo_oracles: int  # number of oracle_chosen_k columns the loss stacks (e-DPO), 0 otherwise


def inspect_data(cfg: TrainConfig) -> DataInfo:
    path = storage.join(cfg.data, "data")
    if not storage.exists(path):
        raise UserError(f"{cfg.data} holds no data/ folder: prepare (and for align, score) it first")
    try:
        if storage.is_local(path):
            dataset = pads.dataset(path, format="parquet")
        else:
            filesystem, inner = storage.arrow_filesystem(path)
            dataset = pads.dataset(inner, format="parquet", filesystem=filesystem)
        names = set(dataset.schema.names)
        num_rows = dataset.count_rows()
    except Exception as err:  # corrupt or non-parquet files
        raise UserError(f"cannot read the parquet files under {path}: {err}") from err

    token_columns = ["prompt_ids", "chosen_ids"] + ([] if cfg.stage == "sft" else ["rejected_ids"])
    missing = [c for c in token_columns if c not in names]
    if missing:
        raise UserError(
            f"{cfg.data} has no token columns ({', '.join(missing)}): prepare it with --tokenizer"
        )
    if cfg.stage != "sft":
        nulls = dataset.to_table(columns=["rejected_ids"]).column(0).null_count
        if nulls:
            raise UserError(
                f"{cfg.data}: {nulls} rows have no rejected response; the {cfg.stage} stage needs pairs"
            )

    extra = score_columns(cfg)
    edpo_oracles = 0
    if cfg.loss == "edpo":
        edpo_oracles = sum(1 for n in names if n.startswith("oracle_chosen_"))
    if extra:
        from ..scoring import check_scored

        needs = [c for c in extra if not (edpo_oracles and c.startswith("oracle_"))]
        needs += [f"{side}_{k}" for side in ("oracle_chosen", "oracle_rejected") for k in range(edpo_oracles)]
        check_scored(
            cfg.data,
            needs=needs,
            reduction=reduction_of(cfg) if any(c.startswith("ref_") for c in extra) else None,
        )
    try:
        plan(cfg, num_rows, cfg.num_workers)
    except ValueError as err:
        raise UserError(f"{cfg.data}: {err}") from None
    columns = tuple(token_columns) + tuple(
        c
        for c in sorted(names)
        if c in extra or (edpo_oracles and c.startswith(("oracle_chosen_", "oracle_rejected_")))
    )
    return DataInfo(path=path, num_rows=num_rows, columns=columns, extra=extra, edpo_oracles=edpo_oracles)
