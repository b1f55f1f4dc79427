"""Equal tuning for `drdo-ray bench quality`: every method starts from a grid of the same size
(4 cells) and follows one rule fixed in advance.

A grid is the product of a few numeric axes (a TrainConfig field such as ``lr`` or ``beta``), each
a run of adjacent rungs of a fixed ladder of values. After the grid is scored (the mean over the
tuning seeds of the validation true reward), a winner at the edge of an axis extends that axis by
the next rung beyond it, the new cells are scored, and the winner is picked again; this repeats
until the winner is inside every axis, an axis reaches its ladder's end, or it has been extended
``max_extensions`` times. Every extension is recorded, so final grid sizes may differ and the
report says by how much. Pure: the caller's ``score`` trains and samples."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Axis:
    """One tuned setting: a TrainConfig field, its ladder (ascending) and the rungs it starts with."""

    name: str
    ladder: tuple[float, ...]
    start: tuple[float, ...]

    def __post_init__(self) -> None:
        if list(self.ladder) != sorted(set(self.ladder)):
            raise ValueError(f"{self.name}: the ladder must ascend without repeats")
        i = self.ladder.index(self.start[0]) if self.start and self.start[0] in self.ladder else -1
        if i < 0 or tuple(self.ladder[i : i + len(self.start)]) != tuple(self.start):
            raise ValueError(
                f"{self.name}: start {self.start} is not a run of adjacent rungs of {self.ladder}"
            )


Cell = dict[str, float]


@dataclass
class Tuning:
    """The outcome of tuning one method (JSON-ready through :meth:`as_dict`)."""

    axes: Sequence[Axis]
    values: dict[str, list[float]]
    scores: dict[tuple[float, ...], dict[int, float]] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    unextended: list[dict[str, Any]] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        """The current grid, in axis order (the first axis varies slowest)."""
        names = [a.name for a in self.axes]
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.values[n] for n in names))]

    def key(self, cell: Cell) -> tuple[float, ...]:
        return tuple(cell[a.name] for a in self.axes)

    def mean(self, cell: Cell) -> float:
        per_seed = self.scores[self.key(cell)]
        return sum(per_seed.values()) / len(per_seed)

    def winner(self) -> Cell:
        """The best mean score over the current grid; the first cell in grid order on a tie."""
        return max(self.cells(), key=self.mean)

    def as_dict(self) -> dict[str, Any]:
        start = 1
        for a in self.axes:
            start *= len(a.start)
        return {
            "axes": {
                a.name: {"ladder": list(a.ladder), "start": list(a.start), "final": self.values[a.name]}
                for a in self.axes
            },
            "start_size": start,
            "final_size": len(self.cells()),
            "extensions": self.extensions,
            "winner_at_unextendable_edge": self.unextended,
            "cells": [
                {
                    "hyperparameters": cell,
                    "per_seed": {str(s): v for s, v in self.scores[self.key(cell)].items()},
                    "mean": self.mean(cell),
                }
                for cell in self.cells()
            ],
            "winner": self.winner(),
        }


def tune(
    axes: Sequence[Axis], score: Callable[[Cell], Mapping[int, float]], *, max_extensions: int
) -> Tuning:
    """Score the start grid, then extend edges by the rule above; ``score(cell)`` returns the
    validation score per tuning seed and is called once per cell."""
    state = Tuning(axes, {a.name: list(a.start) for a in axes})
    extended = {a.name: 0 for a in axes}
    round_ = 0
    while True:
        for cell in state.cells():
            if state.key(cell) not in state.scores:
                state.scores[state.key(cell)] = dict(score(cell))
        best = state.winner()
        state.unextended = []
        grew = False
        for a in axes:
            values, value = state.values[a.name], best[a.name]
            rung = a.ladder.index(value)
            if value == values[0] and value == values[-1]:
                continue  # a one-value axis has no edge to move
            if value == values[0]:
                step, new = -1, rung - 1
            elif value == values[-1]:
                step, new = 1, rung + 1
            else:
                continue
            if not 0 <= new < len(a.ladder):
                state.unextended.append({"axis": a.name, "value": value, "why": "end of the ladder"})
            elif extended[a.name] >= max_extensions:
                state.unextended.append({"axis": a.name, "value": value, "why": "extension limit"})
            else:
                added = a.ladder[new]
                state.values[a.name] = [added, *values] if step < 0 else [*values, added]
                extended[a.name] += 1
                state.extensions.append(
                    {
                        "round": round_,
                        "axis": a.name,
                        "added": added,
                        "winner": best,
                        "winner_mean": state.mean(best),
                    }
                )
                grew = True
        if not grew:
            return state
        round_ += 1
