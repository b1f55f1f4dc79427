"""Win-rate statistics shared by the Oracle and the judge win rates: outcomes, win rates with
ties counted half, deterministic bootstrap intervals, and prompt-length bins (App. F.2).

Pure numpy: no Ray, no torch (docs/architecture.md), so every number here is testable in
milliseconds against hand-computed examples.

Conventions (documented in docs/evaluation.md):
- An outcome is +1 (A wins), 0 (tie) or -1 (B wins). The win rate of A is
  ``(wins + ties / 2) / (wins + ties + losses)``: a tie is half a win, for the Oracle exactly as
  for the judge, so the two rates are comparable and A-vs-B and B-vs-A sum to 1.
- The bootstrap resamples *prompts* (with all their samples), not single pairs: samples of one
  prompt are correlated, and resampling pairs would give intervals that are too narrow. With
  one sample per prompt this is the ordinary bootstrap.
- Bootstrap randomness is seeded: ``seed`` and the group's label feed a ``SeedSequence``, so an
  interval depends only on the data, the seed and the label, never on the order in which
  groups are computed.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..generation.sampling_params import temperature_id

WIN, TIE, LOSS = 1, 0, -1
OUTCOME_NAMES = {WIN: "win", TIE: "tie", LOSS: "loss"}
OUTCOME_VALUES = {name: value for value, name in OUTCOME_NAMES.items()}
DEFAULT_BOOTSTRAP = 2000
DEFAULT_LEVEL = 0.95
_CHUNK = 256  # bootstrap replicates drawn at a time: bounds memory to 256 x clusters ints


def outcomes_from_rewards(
    rewards_a: Sequence[float] | np.ndarray,
    rewards_b: Sequence[float] | np.ndarray,
    *,
    tie_margin: float = 0.0,
) -> np.ndarray:
    """+1 where ``r_A > r_B + tie_margin``, -1 where ``r_B > r_A + tie_margin``, else 0 (a tie).
    ``tie_margin=0`` ties only exactly equal rewards (the paper's ``r(x, y1) > r(x, y2)``)."""
    a = np.asarray(rewards_a, dtype=np.float64)
    b = np.asarray(rewards_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{a.shape[0]} rewards for A but {b.shape[0]} for B")
    if tie_margin < 0:
        raise ValueError("tie_margin must be >= 0")
    diff = a - b
    out = np.zeros(diff.shape, dtype=np.int8)
    out[diff > tie_margin] = WIN
    out[diff < -tie_margin] = LOSS
    return out


def _as_outcomes(outcomes: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(outcomes, dtype=np.int8).reshape(-1)
    if arr.size and not np.isin(arr, (WIN, TIE, LOSS)).all():
        raise ValueError("outcomes must be +1 (win), 0 (tie) or -1 (loss)")
    return arr


def win_rate(outcomes: Sequence[int] | np.ndarray) -> float | None:
    """Win rate of A, ties half; None without outcomes."""
    arr = _as_outcomes(outcomes)
    return float((arr + 1).sum() / (2 * arr.size)) if arr.size else None


def _seed_sequence(seed: int, label: Hashable) -> np.random.SeedSequence:
    # crc32 of the label's text: stable across processes (hash() of a str is salted).
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(repr(label).encode())])


def bootstrap_ci(
    outcomes: Sequence[int] | np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    label: Hashable = "",
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the win rate, resampling clusters (prompts) with
    replacement. ``clusters=None`` makes every outcome its own cluster. None without outcomes
    or with ``n_boot=0``."""
    arr = _as_outcomes(outcomes)
    if arr.size == 0 or n_boot <= 0:
        return None
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    scores = (arr.astype(np.float64) + 1) / 2
    if clusters is None:
        sums, counts = scores, np.ones_like(scores)
    else:
        keys = np.asarray([str(c) for c in clusters])
        if keys.size != arr.size:
            raise ValueError(f"{keys.size} cluster ids for {arr.size} outcomes")
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        # Number clusters by first appearance, so one sample per prompt gives exactly the
        # ordinary bootstrap (same draws).
        rank = np.empty_like(first)
        rank[np.argsort(first)] = np.arange(first.size)
        inverse = rank[inverse]
        sums = np.bincount(inverse, weights=scores)
        counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(_seed_sequence(seed, label))
    n_clusters = sums.size
    rates = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, n_clusters, size=(size, n_clusters))
        rates[start : start + size] = sums[idx].sum(1) / counts[idx].sum(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(rates, [tail, 1 - tail])
    return float(lo), float(hi)


def summarize(
    outcomes: Sequence[int] | np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    label: Hashable = "",
) -> dict[str, Any]:
    """``n, wins, ties, losses, win_rate, ci95`` (JSON-ready; ``ci95`` is ``[lo, hi]`` or None)."""
    arr = _as_outcomes(outcomes)
    ci = bootstrap_ci(arr, clusters, n_boot=n_boot, seed=seed, level=level, label=label)
    return {
        "n": int(arr.size),
        "wins": int((arr == WIN).sum()),
        "ties": int((arr == TIE).sum()),
        "losses": int((arr == LOSS).sum()),
        "win_rate": win_rate(arr),
        "ci95": list(ci) if ci is not None else None,
    }


def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """Mean and sample standard deviation, ignoring NaN (None when nothing is left)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
    }


def temperature_key(t: float | None) -> str:
    """The JSON key of a sampling temperature (of its ``temperature_id``): ``0.7``, ``1``;
    ``greedy`` for None."""
    tid = temperature_id(t)
    return "greedy" if tid is None else f"{tid:g}"


def by_group(
    outcomes: Sequence[int] | np.ndarray,
    groups: Sequence[Hashable],
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per group value (e.g. temperature), keys sorted by the group value."""
    arr = _as_outcomes(outcomes)
    group_arr = np.asarray([str(g) for g in groups])
    cluster_arr = None if clusters is None else np.asarray([str(c) for c in clusters])
    result: dict[str, dict[str, Any]] = {}
    for key in sorted(set(group_arr.tolist()), key=_natural):
        mask = group_arr == key
        result[key] = summarize(
            arr[mask],
            None if cluster_arr is None else cluster_arr[mask],
            n_boot=n_boot,
            seed=seed,
            level=level,
            label=key,
        )
    return result


def _natural(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


# ---------------------------------------------------------------------------- OOD bins


def length_bin(length: int, width: int = 50) -> int:
    """Lower edge of the bin holding ``length`` tokens: bins are [0, w), [w, 2w), ..."""
    if width <= 0:
        raise ValueError("bin width must be > 0")
    return (int(length) // width) * width


def length_bins(
    outcomes: Sequence[int] | np.ndarray,
    lengths: Sequence[int] | np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    width: int = 50,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[dict[str, Any]]:
    """Win rate per prompt-length bin (App. F.2: 50-token bins over prompt token counts).
    Only bins that hold outcomes are listed, in increasing length; each carries ``lo``, ``hi``
    (inclusive token counts), ``label`` ("150-199") and the :func:`summarize` fields."""
    arr = _as_outcomes(outcomes)
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lens.size != arr.size:
        raise ValueError(f"{lens.size} prompt lengths for {arr.size} outcomes")
    if width <= 0:
        raise ValueError("bin width must be > 0")
    cluster_arr = None if clusters is None else np.asarray([str(c) for c in clusters])
    starts = (lens // width) * width
    rows = []
    for lo in sorted(set(starts.tolist())):
        mask = starts == lo
        label = f"{lo}-{lo + width - 1}"
        rows.append(
            {
                "lo": int(lo),
                "hi": int(lo + width - 1),
                "label": label,
                **summarize(
                    arr[mask],
                    None if cluster_arr is None else cluster_arr[mask],
                    n_boot=n_boot,
                    seed=seed,
                    level=level,
                    label=label,
                ),
            }
        )
    return rows


def fmt_ci(ci: Sequence[float] | None) -> str:
    """``[58.1, 65.0]`` (percent) for tables; ``-`` without an interval."""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "-"


def fmt_rate(rate: float | None, ci: Sequence[float] | None = None) -> str:
    """``61.6% [58.1, 65.0]`` for tables; ``-`` without a rate."""
    if rate is None:
        return "-"
    return f"{100 * rate:.1f}%" + (f" {fmt_ci(ci)}" if ci else "")
