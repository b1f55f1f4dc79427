"""Result files of the eval commands: strict JSON writing, and finding them in a run directory.

Run-directory layout the report reads (each eval command takes ``--out`` so a pipeline can put
its results here):

    RUN/train/<name>/metrics.jsonl, status.json     training curves (train/metrics.py)
    RUN/models/<name>/drdo_training.json            the training config of each model
    RUN/samples/<name>/samples.jsonl, generation.json    `drdo-ray generate --out` (proposed)
    RUN/eval/<name>/winrate.json | judge.json | kl.json  (+ ood.json, pairs.jsonl | verdicts.jsonl)
    RUN/report/report.md, RUN/report/figures/*.png       `drdo-ray report`

``<name>`` is free; results are found by file name at any depth under ``RUN/eval``.
"""

from __future__ import annotations

import math
from typing import Any

import fsspec
import numpy as np

from .. import storage


def jsonable(value: Any) -> Any:
    """NaN/inf become null and numpy scalars plain numbers, so the JSON is strict."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def write_result(path: str, data: dict[str, Any]) -> None:
    """Strict JSON at ``path``, its folder created if needed."""
    storage.makedirs(path.rsplit("/", 1)[0])
    storage.write_json(path, jsonable(data))


def find_results(run_dir: str, name: str) -> list[str]:
    """Every ``name`` (e.g. winrate.json) under RUN/eval, sorted by path."""
    root = storage.join(run_dir, "eval")
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.isdir(path):
        return []
    prefix = root[: len(root) - len(path)] if root.endswith(path) else ""
    found = [p for p in fs.find(path) if p.rsplit("/", 1)[-1] == name]
    return sorted(prefix + p if prefix and not p.startswith(prefix) else p for p in found)
