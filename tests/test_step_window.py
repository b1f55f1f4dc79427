"""The loop's step window (train/step_window.py): which steps log and checkpoint, when the
diagnostics run, and what a logged row averages."""

from __future__ import annotations

import pytest

from drdo_ray.config import TrainConfig
from drdo_ray.train.diagnostics import TERM_GRAD_KEYS
from drdo_ray.train.engine import World
from drdo_ray.train.step_window import StepWindow


def _window(total: int = 10, **kw) -> StepWindow:
    cfg = TrainConfig(stage="sft", model="m", data="d", run_dir="r", **kw)
    return StepWindow(cfg, total, World())


def test_logging_and_checkpoint_steps():
    w = _window(10, log_every=3, checkpoint_every=4)
    assert [s for s in range(1, 11) if w.checkpoint_due(s)] == [4, 8, 10]  # and the last step
    assert [s for s in range(1, 11) if w.log_due(s)] == [3, 4, 6, 8, 9, 10]  # a checkpoint logs too
    assert not any(_window(10, checkpoint_every=0).checkpoint_due(s) for s in range(1, 11))


def test_diagnostics_once_per_logged_step():
    w = _window(10, log_every=2)
    assert not w.diagnose_due(1) and w.diagnose_due(2)
    w.add({"loss": 1.0, **dict.fromkeys(TERM_GRAD_KEYS, 0.5)}, tokens=4)
    assert not w.diagnose_due(2)  # the step's first micro-batch measured them
    w.step_done()
    w.close()
    assert w.diagnose_due(4)


def test_a_closed_window_averages_its_micro_batches_and_starts_over():
    w = _window(10, micro_batch_size=4)
    for loss, tokens in ((1.0, 30), (3.0, 50)):
        w.add({"loss": loss, "margin": loss / 2}, tokens)
    w.step_done()
    row = w.close()
    assert (row["loss"], row["margin"]) == (2.0, 1.0)
    assert row["tokens_per_s"] == pytest.approx(80 / row["step_s"])
    assert row["samples_per_s"] == pytest.approx(2 * 4 / row["step_s"])
    w.add({"loss": 5.0}, 10)
    w.step_done()
    assert w.close()["loss"] == 5.0  # the previous window's values are gone
