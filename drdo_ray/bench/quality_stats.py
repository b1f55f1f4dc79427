"""The statistics of `drdo-ray bench quality`, matched to its design (pure numpy).

The unit of replication is the seed: one seed is one SFT model, one data draw, one Oracle and one
training run of every method. So the primary figure is the per-seed paired difference in mean true
reward (method − DPO, method − SFT) with a Student t interval over seeds; samples of one seed are
not independent replications and never enter that interval. Wins / ties / losses over the paired
samples are reported beside it (ties are frequent: r* moves in steps of 0.5), and a bootstrap over
seeds is a secondary figure only."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..eval.stats import outcomes_from_rewards, win_rate

# Two-sided 95% Student t quantiles t(0.975, df), df = 1..30; beyond, the normal's 1.96 is within 2%.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """t(0.975, df) for a 95% two-sided interval."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample sd, n and the 95% t interval of the mean (None with fewer than two values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "sd": None, "n": 1, "ci95": None}
    sd = float(x.std(ddof=1))
    half = t975(x.size - 1) * sd / math.sqrt(x.size)
    return {"mean": mean, "sd": sd, "n": int(x.size), "ci95": [mean - half, mean + half]}


def seed_bootstrap(
    values: Sequence[float], *, n_boot: int, label: str = "", level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of the mean, resampling seeds (secondary: with 5 seeds it is
    coarse and too narrow; the t interval is the primary figure). Seeded by the label."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or n_boot <= 0:
        return None
    rng = np.random.default_rng([zlib.crc32(label.encode()), x.size])
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return [float(lo), float(hi)]


def win_tie_loss(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired sample outcomes of A against B (same seed, prompt, temperature and sample index, so
    the same random stream): counts of wins, ties and losses, and the win rate with ties half."""
    out = outcomes_from_rewards(np.ravel(a), np.ravel(b))
    return {
        "n": int(out.size),
        "wins": int((out > 0).sum()),
        "ties": int((out == 0).sum()),
        "losses": int((out < 0).sum()),
        "win_rate": win_rate(out),
    }


def paired_difference(
    a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray], *, n_boot: int, label: str = ""
) -> dict[str, Any]:
    """A − B per seed in mean true reward (each array holds one seed's sample rewards), the t
    interval over seeds (``n`` is the number of seeds), the secondary seed bootstrap, and the pooled
    wins / ties / losses of the paired samples (``samples``)."""
    seeds = sorted(a)
    if sorted(b) != seeds:
        raise ValueError(f"seeds differ: {seeds} vs {sorted(b)}")
    diffs = [float(np.mean(a[s]) - np.mean(b[s])) for s in seeds]
    return {
        "per_seed": dict(zip(map(str, seeds), diffs)),
        **t_interval(diffs),
        "bootstrap_ci95": seed_bootstrap(diffs, n_boot=n_boot, label=label),
        "positive_seeds": sum(d > 0 for d in diffs),
        "samples": win_tie_loss(
            np.concatenate([np.ravel(a[s]) for s in seeds]), np.concatenate([np.ravel(b[s]) for s in seeds])
        ),
    }


def robustness_effect(
    row: Mapping[str, Mapping[int, float]], base: Mapping[str, Mapping[int, float]], share: str, clean: str
) -> dict[str, Any]:
    """How much less a row loses than the base when non-deterministic pairs replace deterministic
    ones: per seed, (row(share) − row(clean)) − (base(share) − base(clean)), with its t interval.
    Positive: the row is more robust than the base. ``row[condition][seed]`` is a seed's mean r*."""
    seeds = sorted(row[clean])
    effect = [(row[share][s] - row[clean][s]) - (base[share][s] - base[clean][s]) for s in seeds]
    return {"per_seed": dict(zip(map(str, seeds), effect)), **t_interval(effect)}
