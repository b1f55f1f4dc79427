"""Result files of the eval commands: strict JSON writing, and finding them in a run directory
(:class:`~drdo_ray.run_layout.RunLayout`): each eval command takes ``--out``, so a pipeline puts
its results under ``RUN/eval``, where they are found by file name at any depth.
"""

from __future__ import annotations

import math
from typing import Any

import fsspec
import numpy as np

from .. import storage
from ..run_layout import RunLayout


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
    root = RunLayout(run_dir).eval_root
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.isdir(path):
        return []
    prefix = root[: len(root) - len(path)] if root.endswith(path) else ""
    found = [p for p in fs.find(path) if p.rsplit("/", 1)[-1] == name]
    return sorted(prefix + p if prefix and not p.startswith(prefix) else p for p in found)
