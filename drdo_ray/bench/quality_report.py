"""The report of `drdo-ray bench quality`: the JSON (per-seed values of every row and condition,
paired differences against DPO and SFT with t intervals over seeds, wins / ties / losses, the
robustness effect, the tuning table, Oracle accuracy), the figure and the console table. Reads
only the results it is handed (no import of quality.py)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ..eval.stats import temperature_key
from . import synthetic as syn
from .quality_config import CONTROLS, METHODS, PAPER_DRDO, BenchQualityConfig, condition_key
from .quality_stats import paired_difference, robustness_effect, t_interval

TUNING_RULE = (
    "every method starts from a 4-cell grid; a winner at the edge of an axis extends it by the next rung "
    "of its ladder and is re-tuned, until the winner is inside every axis, at a ladder's end, or the axis "
    "was extended max_extensions times; score: mean true reward on the validation prompts, mean over the "
    "tuning seeds"
)


@dataclass
class QualityResults:
    """What a run measured, handed from the protocol to the report."""

    cfg: BenchQualityConfig
    conditions: list[str]
    # rewards[row][condition][seed]: true rewards of the test-prompt samples, (prompt, temperature, sample)
    rewards: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)
    reference: dict[str, dict[int, float]] = field(default_factory=dict)
    oracle_accuracy: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    data: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    train_metrics: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    term_gradients: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)
    tuned: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def add_rewards(self, row: str, conditions: list[str], seed: int, rewards: np.ndarray) -> None:
        for key in conditions:
            self.rewards.setdefault(row, {}).setdefault(key, {})[seed] = rewards


def _seed_means(by_seed: dict[int, np.ndarray]) -> dict[int, float]:
    return {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}


def _mean_of(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in dicts[0] if k != "seed"] if dicts else []
    return {k: float(np.mean([d.get(k, math.nan) for d in dicts])) for k in keys}


def per_seed_interval(by_seed: dict[int, float]) -> dict[str, Any]:
    """One value per seed, and their mean with its t interval."""
    return {"per_seed": {str(s): v for s, v in by_seed.items()}, **t_interval(list(by_seed.values()))}


def error_bars(stats: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Means and the asymmetric error bars of their t intervals (none without an interval)."""
    ys = np.array([s["mean"] for s in stats])
    lo = [y - (s["ci95"] or [y, y])[0] for y, s in zip(ys, stats)]
    hi = [(s["ci95"] or [y, y])[1] - y for y, s in zip(ys, stats)]
    return ys, np.array([lo, hi])


def format_interval(stat: dict[str, Any] | None) -> str:
    """``+0.12 [-0.03, +0.27]`` (``-`` for no statistic)."""
    if stat is None:
        return "-"
    ci = stat["ci95"]
    return f"{stat['mean']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def run_record(
    cfg: BenchQualityConfig,
    random_init: dict[int, float],
    sft: dict[int, float],
    data: Any,
    timings: dict[str, float],
) -> dict[str, Any]:
    """What every quality report ends with: the reference rewards, the data, the settings, the
    timings, the device and the command."""
    return {
        "reference_true_reward": {
            "random_init": float(np.mean(list(random_init.values()))),
            "sft": t_interval(list(sft.values()))["mean"],
            "optimum": float(syn.TARGET_LENGTH),
        },
        "data": data,
        "settings": cfg.model_dump(mode="json"),
        "timings": timings,
        "device": f"cpu ({cfg.threads} thread(s))",
        "command": " ".join(sys.argv),
    }


def _comparisons(res: QualityResults, rows: list[str], means: dict[str, dict[str, dict[int, float]]]) -> dict:
    """The primary statistics: every row against DPO and against SFT, and the robustness effect."""
    conds, n_boot = res.conditions, res.cfg.bootstrap

    def paired(a: str, b: str) -> dict[str, Any]:
        return {
            c: paired_difference(res.rewards[a][c], res.rewards[b][c], n_boot=n_boot, label=f"{a}-{b}-{c}")
            for c in conds
        }

    imitation = "sft_chosen" in rows
    return {
        "vs_dpo": {r: paired(r, "dpo") for r in rows if r != "dpo"},
        "vs_sft": {r: paired(r, "sft") for r in rows if r != "sft"},
        # Against the imitation control: what a row gains beyond SFT on the same chosen responses.
        "vs_sft_chosen": {r: paired(r, "sft_chosen") for r in rows if r != "sft_chosen"} if imitation else {},
        "robustness_vs_dpo": {
            r: {c: robustness_effect(means[r], means["dpo"], c, "0") for c in conds if c != "0"}
            for r in rows
            if r != "dpo"
        },
    }


def _tuning(res: QualityResults) -> dict[str, Any]:
    cfg = res.cfg
    return {
        "seeds": cfg.tune_seeds,
        "condition": condition_key(cfg.tune_arm, cfg.tune_share),
        "split": "validation",
        "rule": TUNING_RULE,
        "max_extensions": cfg.max_extensions,
        "grid_sizes": {
            m: {"start": t["start_size"], "final": t["final_size"]}
            for m, t in res.tuning.items()
            if m != "sft"
        },
        "methods": res.tuning,
    }


def _training(res: QualityResults, rows: list[str]) -> dict[str, Any]:
    """How training went: steps per row and condition, last-epoch metrics, DRDO's step-0 term gradients."""
    conds = res.conditions
    return {
        "training_steps": {
            r: {c: sorted({int(m.get("step", -1)) for m in res.train_metrics[r][c]}) for c in conds}
            for r in rows
            if r != "sft"
        },
        "drdo_step0_term_gradients": {
            c: {label: _mean_of(runs) for label, runs in by_label.items()}
            for c, by_label in res.term_gradients.items()
        },
        "final_train_metrics": {
            r: {c: _mean_of(v) for c, v in by_cond.items()} for r, by_cond in res.train_metrics.items()
        },
    }


def build_report(res: QualityResults) -> dict[str, Any]:
    cfg, conds = res.cfg, res.conditions
    rows = ["sft", *cfg.rows()]
    means = {r: {c: _seed_means(res.rewards[r][c]) for c in conds} for r in rows}
    by_temp = {
        r: {
            c: {
                temperature_key(t): float(np.mean([v[:, k] for v in res.rewards[r][c].values()]))
                for k, t in enumerate(cfg.temperatures)
            }
            for c in conds
        }
        for r in rows
    }
    comparisons = _comparisons(res, rows, means)
    training = _training(res, rows)
    return {
        "protocol": "v3",
        "seeds": cfg.seeds,
        "tune_seeds": cfg.tune_seeds,
        "conditions": conds,
        "rows": rows,
        "descriptions": {
            "sft": "the SFT model every row starts from",
            **{m: METHODS[m].description for m in cfg.methods},
            **{c: CONTROLS[c].description for c in cfg.controls},
        },
        "mean_true_reward": {r: {c: per_seed_interval(means[r][c]) for c in conds} for r in rows},
        "vs_dpo": comparisons["vs_dpo"],
        "vs_sft": comparisons["vs_sft"],
        "vs_sft_chosen": comparisons["vs_sft_chosen"],
        "robustness_vs_dpo": comparisons["robustness_vs_dpo"],
        "mean_true_reward_by_temperature": by_temp,
        "training_steps": training["training_steps"],
        "tuning": _tuning(res),
        "tuned_hyperparameters": res.tuned,
        "paper_drdo": {**PAPER_DRDO, "lr": cfg.paper_lr},
        "oracle_accuracy": {
            c: {k: per_seed_interval(by_seed) for k, by_seed in kinds.items()}
            for c, kinds in res.oracle_accuracy.items()
            if c in conds
        },
        "drdo_step0_term_gradients": training["drdo_step0_term_gradients"],
        "final_train_metrics": training["final_train_metrics"],
        **run_record(cfg, res.reference["random_init"], means["sft"]["0"], res.data, res.timings),
    }


def _share(condition: str) -> float:
    return float(condition.partition(":")[2] or 0)


def plot_report(report: dict[str, Any], path: str) -> None:
    """Left: mean r* by share for each arm (95% t interval over seeds). Right: each row − DPO
    per condition, the primary statistic, with its t interval."""
    from ..eval.plots import COLORS, plt, save_figure

    conds = report["conditions"]
    arms = sorted({c.partition(":")[0] for c in conds if c != "0"})
    rows = report["rows"]
    palette = plt.get_cmap("tab20").colors  # more rows than the 10 default colours
    fig, axes = plt.subplots(1, len(arms) + 1, figsize=(6 * (len(arms) + 1), 5.5))
    for ax, arm in zip(axes, arms):
        cells = ["0"] + [c for c in conds if c.startswith(f"{arm}:")]
        xs = np.array([_share(c) for c in cells])
        for i, row in enumerate(rows):
            ys, err = error_bars([report["mean_true_reward"][row][c] for c in cells])
            ax.errorbar(
                xs + 0.004 * (i - len(rows) / 2),
                ys,
                yerr=err,
                fmt="--o" if row == "sft" else "-o",
                ms=3,
                capsize=2,
                color=palette[i % len(palette)],
                label=row,
            )
        ax.set(
            xlabel=f"non-deterministic share ({arm})",
            ylabel="mean true reward r* (test prompts)",
            title=f"{arm}: mean r*, 95% t interval over seeds",
        )
    axes[0].legend(fontsize=7, ncol=2)
    ax = axes[-1]
    others = [r for r in rows if r != "dpo"]
    for j, c in enumerate(conds):
        ys = np.arange(len(others)) + 0.12 * (j - len(conds) / 2)
        xs, err = error_bars([report["vs_dpo"][r][c] for r in others])
        ax.errorbar(xs, ys, xerr=err, fmt="o", ms=3, capsize=2, color=COLORS[j % 10], label=c)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_yticks(np.arange(len(others)), others, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="mean r* − DPO's, per seed (95% t interval)", title="Paired difference against tuned DPO")
    ax.legend(fontsize=7, title="condition")
    save_figure(fig, path)


def print_report(report: dict[str, Any], console: Console) -> None:
    conds = report["conditions"]
    ref = report["reference_true_reward"]
    table = Table(
        title=f"bench quality: mean r* − tuned DPO's, 95% t interval over {len(report['seeds'])} seeds (SFT {ref['sft']:.2f}, optimum {ref['optimum']:g})"
    )
    table.add_column("row")
    for c in conds:
        table.add_column(c, justify="right")
    for row, by_cond in report["vs_dpo"].items():
        table.add_row(row, *[format_interval(by_cond[c]) for c in conds])
    acc = report["oracle_accuracy"]
    if acc:
        table.add_row(
            "Oracle accuracy (det.)",
            *[f"{100 * acc[c]['deterministic']['mean']:.0f}%" if c in acc else "-" for c in conds],
        )
    console.print(table)
    console.print(f"tuned: {report['tuned_hyperparameters']}")
    console.print(f"grid sizes (start -> final): {report['tuning']['grid_sizes']}")
    console.print(f"wall time {report['timings']['wall_s'] / 60:.1f} min")
