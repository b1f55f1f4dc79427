"""The report of `drdo-ray bench quality`: per method and share, the mean true reward with a seed
interval, paired win rates with prompt-bootstrap intervals, the slope of mean r* against the
non-deterministic share (the robustness claim in one number), the tuning table, Oracle accuracy,
DPO's convergence and DRDO's per-term gradients at step 0; plus the figure and console table."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ..eval.stats import fmt_rate, outcomes_from_rewards, summarize, temperature_key
from . import synthetic as syn

if TYPE_CHECKING:
    from .quality import QualityBench

# Two-sided 95% Student t quantiles by degrees of freedom (a seed interval over a few seeds).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def seed_interval(values: Sequence[float]) -> list[float] | None:
    """95% t-interval of the mean over seeds; None with fewer than two seeds."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    half = _T975.get(x.size - 1, 1.96) * x.std(ddof=1) / math.sqrt(x.size)
    return [float(x.mean() - half), float(x.mean() + half)]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx**2).sum())


def _paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray], label: str, n_boot: int) -> dict[str, Any]:
    """Win rate of A's samples over B's, paired by (seed, prompt, temperature, sample index); the
    bootstrap resamples (seed, prompt) clusters."""
    seeds = sorted(a)
    ra = np.concatenate([a[s].ravel() for s in seeds])
    rb = np.concatenate([b[s].ravel() for s in seeds])
    clusters = np.concatenate(
        [[f"{s}:{p}" for p in range(a[s].shape[0]) for _ in range(a[s][0].size)] for s in seeds]
    )
    return summarize(outcomes_from_rewards(ra, rb), clusters, n_boot=n_boot, seed=0, label=label)


def _curves(runs: list[list[dict[str, float]]], key: str) -> list[float]:
    """Mean over runs of ``key`` per logged row (one row per epoch)."""
    n = min((len(r) for r in runs), default=0)
    return [float(np.mean([r[i].get(key, math.nan) for r in runs])) for i in range(n)]


def build_report(bench: QualityBench, wall: float) -> dict[str, Any]:
    from .quality import share_key

    cfg = bench.cfg
    shares = [share_key(s) for s in bench.shares]
    xs = [float(s) for s in shares]
    seeds = list(range(cfg.seeds))
    rows = [r for r in bench.rewards if r != "init"]
    per_seed = {r: {s: [float(bench.rewards[r][s][i].mean()) for i in seeds] for s in shares} for r in rows}
    mean = {r: {s: float(np.mean(v)) for s, v in per_seed[r].items()} for r in rows}
    slopes = {}
    for r in rows:
        seed_slopes = [slope(xs, [per_seed[r][s][i] for s in shares]) for i in seeds] if len(xs) > 1 else []
        slopes[r] = {
            "slope": slope(xs, [mean[r][s] for s in shares]) if len(xs) > 1 else None,
            "per_seed": seed_slopes,
            "seed_ci95": seed_interval(seed_slopes),
        }
    bases = [r for r in rows if r != "drdo"]
    win = {
        b: {
            s: _paired(bench.rewards["drdo"][s], bench.rewards[b][s], f"drdo-vs-{b}-{s}", cfg.bootstrap)
            for s in shares
        }
        for b in bases
    }
    vs_dpo = {}
    if "dpo" in rows:
        vs_dpo = {
            r: {
                s: _paired(bench.rewards[r][s], bench.rewards["dpo"][s], f"{r}-vs-dpo-{s}", cfg.bootstrap)
                for s in shares
            }
            for r in rows
            if r != "dpo"
        }
    by_temp = {
        r: {
            s: {
                temperature_key(t): float(np.mean([bench.rewards[r][s][i][:, k] for i in seeds]))
                for k, t in enumerate(bench.temps)
            }
            for s in shares
        }
        for r in rows
    }
    dpo_runs = bench.train_curves.get("dpo", {})
    convergence = {}
    for s in shares:
        acc = _curves(dpo_runs.get(s, []), "reward_accuracy")
        convergence[s] = {
            "train_reward_accuracy_by_epoch": acc,
            "train_loss_by_epoch": _curves(dpo_runs.get(s, []), "loss"),
            "last_epoch_gain": acc[-1] - acc[-2] if len(acc) > 1 else None,
        }
    term_grads = {
        s: {
            label: {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            for label, runs in by_label.items()
        }
        for s, by_label in bench.term_grads.items()
    }
    final_train = {
        r: {
            s: {k: float(np.mean([c[-1].get(k, math.nan) for c in curves if c])) for k in curves[0][-1]}
            for s, curves in by_share.items()
            if curves and curves[0]
        }
        for r, by_share in bench.train_curves.items()
        if r in rows
    }
    return {
        "mean_true_reward": mean,
        "mean_true_reward_seed_ci95": {
            r: {s: seed_interval(v) for s, v in per_seed[r].items()} for r in rows
        },
        "mean_true_reward_per_seed": per_seed,
        "mean_true_reward_by_temperature": by_temp,
        "slope_vs_share": slopes,
        "drdo_win_rate": win,
        "win_rate_vs_dpo": vs_dpo,
        "tuned_hyperparameters": bench.tuned,
        "tuning": {"seed": 0, "share": cfg.tune_share, "split": "validation", "results": bench.tuning},
        "paper_drdo_hyperparameters": bench.paper,
        "oracle_accuracy": {s: float(np.mean(bench.oracle_acc[s]["oracle"])) for s in shares},
        "oracle_accuracy_detail": bench.oracle_acc,
        "drdo_step0_term_gradients": term_grads,
        "dpo_convergence": convergence,
        "final_train_metrics": final_train,
        "reference_true_reward": {
            "random_init": float(np.mean([bench.rewards["init"][shares[0]][i].mean() for i in seeds])),
            "sft": mean["sft"][shares[0]],
            "optimum": float(syn.TARGET_LENGTH),
        },
        "data": bench.data_stats,
        "settings": cfg.model_dump(mode="json") | {"shares": bench.shares},
        "timings": {"wall_s": wall, **{f"{k}_s": v for k, v in bench.progress.times.items()}},
        "device": f"cpu ({cfg.threads} thread(s))",
        "command": " ".join(sys.argv),
    }


def plot_report(report: dict[str, Any], path: str) -> None:
    from ..eval.plots import COLORS, plt, save_figure

    shares = list(report["oracle_accuracy"])
    xs = np.array([float(s) for s in shares])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (row, values) in enumerate(report["mean_true_reward"].items()):
        cis = report["mean_true_reward_seed_ci95"][row]
        ys = np.array([values[s] for s in shares])
        err = np.array(
            [
                [y - (cis[s] or [y, y])[0] for s, y in zip(shares, ys)],
                [(cis[s] or [y, y])[1] - y for s, y in zip(shares, ys)],
            ]
        )
        sl = report["slope_vs_share"][row]["slope"]
        ax1.errorbar(
            xs + 0.004 * (i - 3),
            ys,
            yerr=err,
            fmt="--o" if row == "sft" else "-o",
            capsize=3,
            color=COLORS[i % 10],
            label=f"{row} (slope {sl:+.2f})" if sl is not None else row,
        )
    ax1.set(
        xlabel="non-deterministic share of pairs",
        ylabel="mean true reward r* (test prompts)",
        title="Mean true reward, 95% seed interval",
    )
    ax1.legend(fontsize=7)
    for i, (base, values) in enumerate(report["drdo_win_rate"].items()):
        rates = np.array([values[s]["win_rate"] for s in shares])
        cis = [values[s]["ci95"] or [values[s]["win_rate"]] * 2 for s in shares]
        err = np.array([[r - c[0] for r, c in zip(rates, cis)], [c[1] - r for r, c in zip(rates, cis)]])
        ax2.errorbar(
            xs + 0.004 * (i - 3),
            rates,
            yerr=err,
            marker="o",
            capsize=3,
            color=COLORS[(i + 1) % 10],
            label=f"DRDO vs {base}",
        )
    ax2.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax2.set(
        xlabel="non-deterministic share of pairs",
        ylabel="true-reward win rate of tuned DRDO",
        ylim=(0, 1),
        title="Paired win rate (ties half, 95% prompt bootstrap)",
    )
    ax2.legend(fontsize=7)
    save_figure(fig, path)


def print_report(report: dict[str, Any], console: Console) -> None:
    shares = list(report["oracle_accuracy"])
    ref = report["reference_true_reward"]
    table = Table(
        title=f"bench quality: mean true reward on test prompts (optimum {ref['optimum']:g}, "
        f"random init {ref['random_init']:.2f})"
    )
    table.add_column("row")
    for s in shares:
        table.add_column(f"share {s}", justify="right")
    table.add_column("slope", justify="right")
    for row, values in report["mean_true_reward"].items():
        ci = report["mean_true_reward_seed_ci95"][row]
        cells = [f"{values[s]:.2f}" + (f" [{ci[s][0]:.2f}, {ci[s][1]:.2f}]" if ci[s] else "") for s in shares]
        sl = report["slope_vs_share"][row]["slope"]
        table.add_row(row, *cells, f"{sl:+.2f}" if sl is not None else "-")
    for base, values in report["drdo_win_rate"].items():
        table.add_row(
            f"DRDO win vs {base}", *[fmt_rate(values[s]["win_rate"], values[s]["ci95"]) for s in shares], ""
        )
    table.add_row("Oracle accuracy", *[f"{100 * report['oracle_accuracy'][s]:.1f}%" for s in shares], "")
    console.print(table)
    console.print(f"tuned: {report['tuned_hyperparameters']}")
    console.print(f"wall time {report['timings']['wall_s'] / 60:.1f} min")
