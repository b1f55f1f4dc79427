"""Per-step metrics: JSONL and TensorBoard in the run directory, and a console line with ETA.
Written by rank 0 only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ..run_layout import METRICS_FILE


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and the same scalars to
    TensorBoard event files under ``tensorboard/``; prints a progress line."""

    KEY_METRICS = ("loss", "reward_accuracy", "margin", "p_w", "grad_norm", "lr")

    def __init__(
        self, directory: str | Path, *, total_steps: int, start_step: int = 0, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.start_step = start_step
        self.started = time.perf_counter()
        self.path = Path(directory) / METRICS_FILE
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(directory) / "tensorboard"))
            except ImportError:  # tensorboard is optional; the JSONL is the record
                self._tb = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {
            "step": step,
            **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()},
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total_steps - step) if done > 0 else float("inf")
        shown = " ".join(f"{k}={row[k]:.4g}" for k in self.KEY_METRICS if isinstance(row.get(k), float))
        print(f"step {step}/{self.total_steps} | {shown} | eta {_eta(eta)}", flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
