"""The optimizer steps between two metric logs, as one object: which steps log and checkpoint,
the micro-batches' metrics averaged over the window and the workers, and the window's throughput."""

from __future__ import annotations

import time
from collections import defaultdict

from ..config import TrainConfig
from .collectives import mean_across
from .diagnostics import TERM_GRAD_KEYS
from .engine import World


class StepWindow:
    """Collects each good micro-batch's metrics and tokens (:meth:`add`) and each optimizer step
    (:meth:`step_done`) until a logging step closes the window (:meth:`close`)."""

    def __init__(self, cfg: TrainConfig, total_steps: int, world: World) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.world = world
        self._open()

    def _open(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)
        self.tokens = 0
        self.steps = 0
        self.started = time.perf_counter()

    def checkpoint_due(self, step: int) -> bool:
        """Every ``checkpoint_every`` steps and at the last one (never with 0)."""
        every = self.cfg.checkpoint_every
        return every > 0 and (step % every == 0 or step == self.total_steps)

    def log_due(self, step: int) -> bool:
        """Every ``log_every`` steps, and at each checkpoint (it reports the logged metrics)."""
        return step % self.cfg.log_every == 0 or self.checkpoint_due(step)

    def diagnose_due(self, step: int) -> bool:
        """DRDO's term-gradient diagnostics: once per logged step, on its first good micro-batch
        (the same decision on every rank)."""
        return self.log_due(step) and TERM_GRAD_KEYS[0] not in self.values

    def add(self, metrics: dict[str, float], tokens: int) -> None:
        for key, value in metrics.items():
            self.values[key].append(value)
        self.tokens += tokens

    def step_done(self) -> None:
        self.steps += 1

    def close(self) -> dict[str, float]:
        """The window's metrics, averaged over its micro-batches and the workers, with
        ``tokens_per_s``, ``samples_per_s`` (all workers) and ``step_s``; opens the next window."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        averaged = {key: sum(v) / len(v) for key, v in self.values.items()}
        averaged |= {"tokens_per_s": self.tokens / elapsed, "step_s": elapsed / self.steps}
        averaged = mean_across(averaged, self.world)
        averaged["tokens_per_s"] *= self.world.size  # every worker processed its own tokens
        micro_batches = len(self.values.get("loss", ()))
        averaged["samples_per_s"] = self.cfg.micro_batch_size * self.world.size * micro_batches / elapsed
        self._open()
        return averaged
