"""TL;DR easy / hard / full splits (paper §5, App. C.3; docs/concepts.md).

Over rows with a labeler confidence, take the 50th percentile of confidence and of the
normalized token edit distance between the two summaries (numpy's default linear
interpolation). Tie rule: a value EQUAL to its percentile counts as high.
- easy  = confidence >= p50 and distance >= p50   (confident labels, clearly different texts)
- hard  = confidence <  p50 and distance <  p50
- mixed = one high, one low  (only in `full`)
- unrated = confidence is null (only in `full`; excluded from the percentiles)
`full` = every row. Pure numpy: no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

TLDR_SPLITS = ("easy", "hard", "full")


def normalized_edit_distance(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Levenshtein distance over token sequences divided by the longer length (0 for two empties)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    return Levenshtein.distance(list(a), list(b)) / longest


def thresholds(confidence: np.ndarray, distance: np.ndarray) -> tuple[float, float]:
    """(confidence p50, distance p50) over rows whose confidence is not NaN."""
    rated = ~np.isnan(confidence)
    if not rated.any():
        raise ValueError("no TL;DR row has a labeler confidence: easy/hard splits are undefined")
    return float(np.percentile(confidence[rated], 50)), float(np.percentile(distance[rated], 50))


def assign(confidence: np.ndarray, distance: np.ndarray, conf_p50: float, dist_p50: float) -> np.ndarray:
    """The difficulty label of each row (see the module docstring for the tie rule)."""
    high_conf = confidence >= conf_p50
    high_dist = distance >= dist_p50
    labels = np.where(high_conf & high_dist, "easy", np.where(~high_conf & ~high_dist, "hard", "mixed"))
    return np.where(np.isnan(confidence), "unrated", labels).astype(object)


def in_split(difficulty: np.ndarray, split: str) -> np.ndarray:
    if split not in TLDR_SPLITS:
        raise ValueError(f"unknown TL;DR split {split!r}; choose one of {', '.join(TLDR_SPLITS)}")
    if split == "full":
        return np.ones(len(difficulty), dtype=bool)
    return difficulty == split


def split_stats(confidence: np.ndarray, distance: np.ndarray, difficulty: np.ndarray) -> dict[str, Any]:
    """count, mean confidence (over rated rows) and mean distance for easy, hard and full."""

    def summary(mask: np.ndarray) -> dict[str, Any]:
        conf = confidence[mask]
        rated = conf[~np.isnan(conf)]
        return {
            "count": int(mask.sum()),
            "mean_confidence": round(float(rated.mean()), 4) if rated.size else None,
            "mean_distance": round(float(distance[mask].mean()), 4) if mask.any() else None,
        }

    return {split: summary(in_split(difficulty, split)) for split in TLDR_SPLITS}
