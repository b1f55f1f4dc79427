"""Testing aid (``TrainConfig.trace_rows``): which rows each rank trained on, for each optimizer
step, so a run that lost a worker or a node can be checked row by row against one that did not
(none seen twice, none skipped). A row is known by a fingerprint of its tensors; a resumed run
drops the lines past the step it resumed from, as it does with its metrics, since those
micro-batches are trained again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def row_fingerprints(batch: dict[str, torch.Tensor], rows: int) -> list[str]:
    """One short digest per row of a collated micro-batch, over every per-row tensor."""
    keys = sorted(k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() and len(v) == rows)
    digests = []
    for i in range(rows):
        h = hashlib.sha1()
        for key in keys:
            h.update(key.encode() + batch[key][i].detach().cpu().contiguous().numpy().tobytes())
        digests.append(h.hexdigest()[:16])
    return digests


class RowTrace:
    """Appends ``{"step", "epoch", "pid", "rows"}`` lines to ``path`` (None: records nothing);
    the writer's pid tells the attempts of a restarted run apart."""

    def __init__(self, path: Path | None, resumed_at: int) -> None:
        self.path = path
        if path is None or not path.exists():
            return
        kept = [
            line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resumed_at
        ]
        path.write_text("".join(line + "\n" for line in kept))

    def add(self, step: int, epoch: int, batch: dict[str, torch.Tensor], rows: int) -> None:
        if self.path is None:
            return
        line = json.dumps(
            {"step": step, "epoch": epoch, "pid": os.getpid(), "rows": row_fingerprints(batch, rows)}
        )
        with self.path.open("a") as f:
            f.write(line + "\n")


def traced_rows(train_dir: Path) -> list[tuple[int, str]]:
    """Every (epoch, row fingerprint) the run trained on, over all ranks, sorted."""
    seen = []
    for path in sorted(train_dir.glob("rows-rank-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            seen += [(record["epoch"], row) for row in record["rows"]]
    return sorted(seen)
