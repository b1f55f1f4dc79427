"""Helper of the resume tests (test_loop_direct.py, test_lora.py): the training loop, called
directly, killed right after the checkpoint it writes at one step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drdo_ray.config import TrainConfig
from drdo_ray.train.engine import World
from drdo_ray.train.loop import run


def checkpoint_then_die(cfg: TrainConfig, feed: list, num_rows: int, step: int, keep: Path) -> Path:
    """Run ``cfg`` on ``feed`` until its checkpoint at ``step``, copy that checkpoint to ``keep``
    and stop the run there, as a process dying right after it would; returns ``keep``."""

    class StopAtCheckpoint:
        def report(self, metrics, checkpoint_dir):
            if checkpoint_dir is not None and metrics["global_step"] == step:
                shutil.copytree(checkpoint_dir, keep)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, batches=lambda e: feed, num_rows=num_rows, world=World(), reporter=StopAtCheckpoint())
    return keep
