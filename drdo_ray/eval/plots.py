"""Figures of the report, in the paper's layouts: training curves (Fig. 5), win rate vs sampling
temperature per opponent (Fig. 2), win rate by prompt length (Fig. 6). matplotlib with the Agg
backend (no display); every function writes one PNG and returns its path."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

DPI = 130
COLORS = plt.get_cmap("tab10").colors

# Fig. 5 panels: metric key(s) in metrics.jsonl, title, y label.
TRAINING_PANELS: list[tuple[tuple[str, ...], str, str]] = [
    (("loss",), "Loss", "loss"),
    (("reward_accuracy",), "(a) Reward accuracy", "accuracy"),
    (("margin",), "Reward margin (chosen - rejected)", "margin"),
    (("chosen_logps",), "(c) Chosen log-probs", "log p(y_w|x)"),
    (("rejected_logps",), "(d) Rejected log-probs", "log p(y_l|x)"),
    (("distill_loss", "contrastive_loss"), "Loss terms: distill (solid), contrastive (dashed)", "loss"),
]


def save_figure(fig: Any, path: str) -> str:
    """Write ``fig`` as a PNG to ``path`` (local or object store) and close it; returns ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    fs, root = fsspec.core.url_to_fs(path)
    fs.makedirs(root.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(root, "wb") as f:
        f.write(buffer.getvalue())
    return path


def _smooth(values: np.ndarray, points: int) -> np.ndarray:
    """EMA whose span follows the number of points, so short runs stay unsmoothed."""
    if points < 20:
        return values
    alpha = 2 / (max(points // 20, 2) + 1)
    out = np.empty_like(values)
    acc = np.nan
    for i, v in enumerate(values):
        acc = v if np.isnan(acc) else (acc if np.isnan(v) else alpha * v + (1 - alpha) * acc)
        out[i] = acc
    return out


def _training_panels(
    runs: Mapping[str, Mapping[str, Any]],
) -> list[tuple[tuple[str, ...], str, str, set[str]]]:
    """(keys, title, y label, runs drawn) per panel. Log-probs summed over tokens (DPO family)
    and averaged over tokens (DRDO family) differ ~100x in scale: when both are present, each
    reduction gets its own log-prob panels instead of one unreadable shared axis."""
    reductions = {name: series.get("_reduction") for name, series in runs.items()}
    distinct = sorted({r for r in reductions.values() if r})
    panels: list[tuple[tuple[str, ...], str, str, set[str]]] = []
    split: list[tuple[str, tuple[str, ...], str, str, set[str]]] = []
    for keys, title, ylabel in TRAINING_PANELS:
        drawn = {name for name, series in runs.items() if any(_drawable(series, k) for k in keys)}
        if not drawn:
            continue
        if keys[0].endswith("_logps") and len(distinct) > 1:
            for reduction in distinct:
                subset = {n for n in drawn if reductions[n] == reduction}
                if subset:
                    split.append((reduction, keys, f"{title} ({reduction} over tokens)", ylabel, subset))
            if keys[0] == "rejected_logps":  # chosen and rejected of one reduction side by side
                panels += [entry[1:] for entry in sorted(split, key=lambda e: distinct.index(e[0]))]
                split = []
        else:
            panels.append((keys, title, ylabel, drawn))
    return panels + [entry[1:] for entry in sorted(split, key=lambda e: distinct.index(e[0]))]


def _drawable(series: Mapping[str, Any], key: str) -> bool:
    """A metric worth a line: logged, and not identically zero (DPO logs contrastive_loss=0)."""
    values = np.asarray(series.get(key, []), dtype=float)
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.any(finite != 0))


def plot_training_curves(runs: Mapping[str, Mapping[str, Any]], path: str, *, title: str = "") -> str | None:
    """One panel per metric, one line per run (``runs[name][metric]`` over ``runs[name]['step']``;
    optional ``runs[name]['_reduction']``: "sum" or "mean" log-probs). Panels no run logged are
    left out; None when nothing is plottable."""
    panels = _training_panels(runs)
    if not panels:
        return None
    names = list(runs)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (keys, panel_title, ylabel, drawn) in zip(axes.flat, panels):
        for name in names:
            if name not in drawn:
                continue
            series = runs[name]
            i = names.index(name)  # one color per run across panels
            steps = np.asarray(series.get("step", []), dtype=float)
            for j, key in enumerate(keys):
                if not _drawable(series, key):
                    continue
                values = np.asarray(series[key], dtype=float)
                label = name if len(keys) == 1 else f"{name}: {key.replace('_loss', '')}"
                color = COLORS[i % len(COLORS)]
                smooth = _smooth(values, len(values))
                if smooth is not values:
                    ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(
                    steps, smooth, color=color, linewidth=1.6, label=label, linestyle="-" if j == 0 else "--"
                )
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rates(
    ax: Any,
    xs: Sequence[float],
    points: Sequence[tuple[float, Sequence[float] | None]],
    color: Any,
    label: str,
) -> None:
    """One line of win rates (in %) with their 95% intervals (none: a point) as error bars."""
    rates = np.array([100 * rate for rate, _ in points])
    lo = np.array([100 * (ci or (rate, rate))[0] for rate, ci in points])
    hi = np.array([100 * (ci or (rate, rate))[1] for rate, ci in points])
    ax.errorbar(xs, rates, yerr=[rates - lo, hi - rates], marker="o", capsize=3, color=color, label=label)


def plot_winrate_vs_temperature(
    panels: Mapping[str, Mapping[str, Mapping[float, tuple[float, Sequence[float] | None]]]],
    path: str,
    *,
    ylabel: str = "Oracle win rate (%)",
) -> str | None:
    """Fig. 2: ``panels[A][opponent][temperature] = (win_rate, ci95)``; one panel per A, one
    line (with its 95% interval as error bars) per opponent, 50% marked."""
    panels = {a: ops for a, ops in panels.items() if ops}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (a, opponents) in zip(axes.flat, panels.items()):
        ax.set_xticks(sorted({t for points in opponents.values() for t in points}))
        width = 0.8 / max(len(opponents), 1)
        for i, (opponent, points) in enumerate(sorted(opponents.items())):
            temps = sorted(points)
            # Small horizontal offsets keep overlapping error bars readable.
            xs = np.array(temps) + (i - (len(opponents) - 1) / 2) * width * 0.05
            plot_rates(ax, xs, [points[t] for t in temps], COLORS[i % len(COLORS)], f"vs {opponent}")
        ax.axhline(50, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{a}: win rate vs temperature", fontsize=10)
        ax.set_xlabel("sampling temperature")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-3, 103)  # markers at 0% / 100% stay whole
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_ood(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str,
    *,
    title: str = "",
    ylabel: str = "win rate (%)",
) -> str | None:
    """Fig. 6: win rate (with 95% interval) per prompt-length bin, one line per comparison;
    the bars below show how many pairs each bin holds (sparse bins are noisy)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(7.5, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = min(b["hi"] - b["lo"] + 1 for bins in series.values() for b in bins)
    for i, (name, bins) in enumerate(series.items()):
        centers = np.array([(b["lo"] + b["hi"] + 1) / 2 for b in bins], dtype=float)
        rates = np.array([100 * b["win_rate"] for b in bins])
        lo = np.array([100 * (b["ci95"] or (b["win_rate"],) * 2)[0] for b in bins])
        hi = np.array([100 * (b["ci95"] or (b["win_rate"],) * 2)[1] for b in bins])
        offset = (i - (len(series) - 1) / 2) * width * 0.08
        color = COLORS[i % len(COLORS)]
        ax.errorbar(
            centers + offset,
            rates,
            yerr=[rates - lo, hi - rates],
            marker="o",
            capsize=3,
            color=color,
            label=name,
        )
        bar_w = width * 0.8 / len(series)
        ax_n.bar(
            centers + (i - (len(series) - 1) / 2) * bar_w,
            [b["n"] for b in bins],
            width=bar_w,
            color=color,
            alpha=0.6,
        )
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(-3, 103)  # markers at 0% / 100% stay whole
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "Win rate by prompt length", fontsize=10)
    ax_n.set_ylabel("pairs")
    ax_n.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_n.set_xlabel(f"prompt tokens ({width}-token bins)")
    ax_n.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save_figure(fig, path)
