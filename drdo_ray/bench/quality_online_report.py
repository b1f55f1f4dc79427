"""The report of `drdo-ray bench quality --regime online`: mean r* per row and per round, the
per-seed paired differences (against online DPO, offline DPO, SFT, the imitation controls, and each
row online against itself offline) with t intervals over seeds, what each round's samples and pairs
were, the tuning, the figure and the console table. Reads only the results it is handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from .quality_config import CONTROLS, METHODS, PAPER_DRDO, BenchQualityConfig, online_row
from .quality_report import TUNING_RULE, error_bars, format_interval, per_seed_interval, run_record
from .quality_stats import paired_difference

# The rows every other row is compared with, when present.
BASES = ("online_dpo", "dpo", "sft", "online_sft_best", "sft_chosen")
ONLINE_TUNING_RULE = (
    "each method keeps its offline-tuned settings; its learning rate is tuned again online: a 3-rung "
    "start centred on the offline winner (2 at a ladder end), then the offline edge rule; score: mean "
    "true reward of the last round's policy on the validation prompts, mean over the tuning seeds; the "
    "paper's DRDO stays untuned"
)


@dataclass
class OnlineResults:
    """What an online run measured, handed from the protocol to the report."""

    cfg: BenchQualityConfig
    # rewards[row][seed]: the test-prompt samples' r* (prompt, temperature, sample) of the row's
    # final model (offline rows: trained on the deterministic pairs; online rows: the last round's)
    rewards: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    # rounds[online row][seed]: each round's statistics (round_stats, plus its policy's test mean r*)
    rounds: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)
    oracle_accuracy: dict[str, dict[int, float]] = field(default_factory=dict)
    random_init: dict[int, float] = field(default_factory=dict)
    data: list[dict[str, float]] = field(default_factory=list)
    tuned: dict[str, dict[str, float]] = field(default_factory=dict)
    tuned_online: dict[str, dict[str, float]] = field(default_factory=dict)
    offline_tuning: dict[str, Any] = field(default_factory=dict)
    offline_tuning_source: str = ""
    tuning: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def online_rows(cfg: BenchQualityConfig) -> list[str]:
    return [online_row(r) for r in cfg.rows()]


def _descriptions(cfg: BenchQualityConfig) -> dict[str, str]:
    out = {"sft": "the SFT model every row starts from"}
    for row in cfg.rows():
        text = METHODS[row].description if row in METHODS else CONTROLS[row].description
        out[row] = f"{text}; offline, on the deterministic pairs"
    for row in cfg.rows():
        text = "SFT on the Oracle's best sample" if row == "sft_chosen" else row
        out[online_row(row)] = f"{text}, online: {cfg.online_rounds} rounds on its own samples"
    return out


def _comparisons(res: OnlineResults, rows: list[str]) -> dict[str, Any]:
    """Every row against each base, and every online row against its offline self."""
    n_boot = res.cfg.bootstrap

    def paired(a: str, b: str) -> dict[str, Any]:
        return paired_difference(res.rewards[a], res.rewards[b], n_boot=n_boot, label=f"online-{a}-{b}")

    out: dict[str, Any] = {
        f"vs_{base}": {r: paired(r, base) for r in rows if r != base} for base in BASES if base in res.rewards
    }
    out["online_vs_offline"] = {online_row(r): paired(online_row(r), r) for r in res.cfg.rows()}
    # The verdict's own questions, offline and online: what the distillation term does when added to
    # DRDO(-R), and what DRDO(-R) gains beyond imitation.
    named = []
    for a, b in (("minus_r_plus_distill", "drdo_minus_r"), ("drdo_minus_r", "sft_chosen")):
        if a in res.rewards and b in res.rewards:
            named += [(a, b), (online_row(a), online_row(b))]
    out["named"] = {f"{a} − {b}": paired(a, b) for a, b in named}
    return out


def _by_round(
    res: OnlineResults,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, float]]]]:
    """Mean r* on the test prompts per round (round 0: SFT, every row's start) with its t interval
    over seeds, and each round's sample and pair statistics (means over seeds)."""
    sft = {s: float(np.mean(v)) for s, v in res.rewards["sft"].items()}
    reward, data = {}, {}
    for row, by_seed in res.rounds.items():
        seeds = sorted(by_seed)
        rounds = len(by_seed[seeds[0]])
        reward[row] = [per_seed_interval(sft)] + [
            per_seed_interval({s: by_seed[s][k]["mean_true_reward"] for s in seeds}) for k in range(rounds)
        ]
        keys = [k for k, v in by_seed[seeds[0]][0].items() if isinstance(v, int | float)]
        data[row] = [
            {key: float(np.nanmean([by_seed[s][k][key] for s in seeds])) for key in keys}
            for k in range(rounds)
        ]
    return reward, data


def build_online_report(res: OnlineResults) -> dict[str, Any]:
    cfg = res.cfg
    rows = ["sft", *cfg.rows(), *online_rows(cfg)]
    means = {r: {s: float(np.mean(v)) for s, v in res.rewards[r].items()} for r in rows}
    by_round, round_data = _by_round(res)
    return {
        "protocol": "v3-online",
        "seeds": cfg.seeds,
        "tune_seeds": cfg.tune_seeds,
        "rows": rows,
        "descriptions": _descriptions(cfg),
        "mean_true_reward": {r: per_seed_interval(means[r]) for r in rows},
        **_comparisons(res, rows),
        "mean_true_reward_by_round": by_round,
        "rounds": round_data,
        "training_steps": {
            "offline": cfg.epochs * (cfg.pairs // cfg.batch_size),
            "online_per_round": cfg.epochs * (cfg.online_prompts // cfg.batch_size),
            "online": cfg.online_rounds * cfg.epochs * (cfg.online_prompts // cfg.batch_size),
        },
        "tuning": {
            "offline_source": res.offline_tuning_source,
            "offline_rule": TUNING_RULE,
            "offline": res.offline_tuning,
            "online_rule": ONLINE_TUNING_RULE,
            "online": res.tuning,
        },
        "tuned_hyperparameters": res.tuned,
        "tuned_online_hyperparameters": res.tuned_online,
        "paper_drdo": {**PAPER_DRDO, "lr": cfg.paper_lr},
        "oracle_accuracy": {k: per_seed_interval(v) for k, v in res.oracle_accuracy.items()},
        **run_record(cfg, res.random_init, means["sft"], res.data, res.timings),
    }


def plot_online_report(report: dict[str, Any], path: str) -> None:
    """Left: mean r* per round of each online row (95% t interval over seeds), each offline row as a
    dotted line of the same colour. Right: every row − online DPO and − offline DPO, per seed."""
    from ..eval.plots import COLORS, plt, save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 7))
    palette = plt.get_cmap("tab10").colors
    offline = [r for r in report["rows"] if not r.startswith("online_")]
    for i, row in enumerate(offline):
        color = palette[i % len(palette)]
        left.axhline(
            report["mean_true_reward"][row]["mean"], color=color, ls=":", lw=1, label=f"{row} (offline)"
        )
        online = online_row(row)
        if online in report["mean_true_reward_by_round"]:
            ys, err = error_bars(report["mean_true_reward_by_round"][online])
            left.errorbar(
                np.arange(len(ys)), ys, yerr=err, fmt="-o", ms=3, capsize=2, color=color, label=online
            )
    left.set_xticks(np.arange(report["settings"]["online_rounds"] + 1))
    left.set(xlabel="round (0: SFT)", ylabel="mean true reward r* (test prompts)", title="Mean r* per round")
    left.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))  # off the lines
    for j, base in enumerate(("online_dpo", "dpo")):
        stats = report[f"vs_{base}"]
        others = [r for r in report["rows"] if r not in ("online_dpo", "dpo")]
        xs, err = error_bars([stats[r] for r in others])
        ys = np.arange(len(others)) + 0.2 * (j - 0.5)
        right.errorbar(xs, ys, xerr=err, fmt="o", ms=3, capsize=2, color=COLORS[j], label=f"− {base}")
    right.axvline(0, color="grey", lw=0.8, ls=":")
    right.set_yticks(np.arange(len(others)), others, fontsize=8)
    right.invert_yaxis()
    right.set(xlabel="mean r* difference, per seed (95% t interval)", title="Paired difference against DPO")
    right.legend(fontsize=7)
    labels = "r* itself" if report["settings"].get("online_oracle") == "true" else "the trained Oracle"
    fig.suptitle(f"bench quality, online regime: rounds labelled by {labels}; {len(report['seeds'])} seeds")
    save_figure(fig, path)


def print_online_report(report: dict[str, Any], console: Console) -> None:
    ref = report["reference_true_reward"]
    table = Table(
        title=f"bench quality (online): mean r* and paired differences, 95% t interval over "
        f"{len(report['seeds'])} seeds (SFT {ref['sft']:.2f}, optimum {ref['optimum']:g})"
    )
    for col in ("row", "mean r*", "− online DPO", "− offline DPO", "online − offline"):
        table.add_column(col, justify="left" if col == "row" else "right")
    for row in report["rows"]:
        table.add_row(
            row,
            f"{report['mean_true_reward'][row]['mean']:.2f}",
            format_interval(report["vs_online_dpo"].get(row)),
            format_interval(report["vs_dpo"].get(row)),
            format_interval(report["online_vs_offline"].get(row)),
        )
    console.print(table)
    console.print(f"tuned online: {report['tuned_online_hyperparameters']}")
    console.print(f"wall time {report['timings']['wall_s'] / 60:.1f} min")
