"""What a checkpoint holds besides the engine's own state: where the run is (optimizer step,
epoch, micro-batches consumed in the epoch, samples consumed) and every rank's RNG state, so
a restart skips exactly what was seen and draws the same random numbers."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    global_step: int = 0  # optimizer steps taken
    epoch: int = 0
    epoch_micro: int = 0  # micro-batches of this epoch already consumed, per worker
    consumed_samples: int = 0  # rows consumed across all workers
    bad_steps: int = 0  # non-finite losses skipped in total
    consecutive_bad: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_trainer_state(directory: Path, state: TrainerState, rank: int) -> None:
    if rank == 0:
        (directory / STATE_FILE).write_text(state.to_json())
    torch.save(_rng_state(), directory / f"rng_rank{rank}.pt")


def load_trainer_state(directory: Path, rank: int) -> TrainerState:
    state = TrainerState(**json.loads((directory / STATE_FILE).read_text()))
    rng = directory / f"rng_rank{rank}.pt"
    if rng.exists():  # absent when resuming on a different number of workers
        _set_rng_state(torch.load(rng, weights_only=False))
    return state
