"""The report's online section, from each finished round's RUN/rounds/<k>/round.json and the
scored samples beside it (drdo_ray/online/): held-out Oracle win rate vs round per method (against
SFT and against the method's previous round), the Oracle-reward distribution of each round's
samples, and how stale each round's data was."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import matplotlib.pyplot as plt
import numpy as np

from .. import storage
from ..run_layout import ROUND_FILE, RunLayout
from .plots import COLORS, plot_rates, save_figure
from .stats import fmt_rate


def load_rounds(run: str) -> list[dict[str, Any]]:
    """Each finished round's record, in round order; each method's sample rewards attached."""
    layout = RunLayout(run)
    if not storage.exists(layout.rounds_root):
        return []
    fs, root = fsspec.core.url_to_fs(layout.rounds_root)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    records = []
    for k in sorted(int(n) for n in names if n.isdigit()):
        path = layout.round(k).round_record
        if not storage.exists(path):
            continue
        record = storage.read_json(path)
        for method in record["methods"]:
            scores = storage.join(layout.round(k).pairs(method), "scores.jsonl")
            record["methods"][method]["rewards"] = (
                [row["reward"] for row in _read_jsonl(scores)] if storage.exists(scores) else []
            )
        records.append(record)
    return records


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with storage.open_binary(path) as f:
        return [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]


def plot_winrate_vs_round(rounds: list[dict[str, Any]], path: str) -> str | None:
    """Held-out Oracle win rate per round and method, against SFT (left) and against the
    method's previous round (right), with 95% intervals; 50% marked."""
    if not rounds:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.8), squeeze=False)
    methods = list(rounds[0]["methods"])
    for ax, which, title in zip(axes.flat, ("sft", "previous"), ("vs SFT", "vs its previous round")):
        for i, method in enumerate(methods):
            points = [
                (r["round"], w)
                for r in rounds
                if (w := ((r["methods"].get(method) or {}).get("winrates") or {}).get(which))
                and w.get("win_rate") is not None
            ]
            if not points:
                continue
            xs = np.array([k for k, _ in points], dtype=float) + (i - (len(methods) - 1) / 2) * 0.06
            rates = [(w["win_rate"], w.get("ci95")) for _, w in points]
            plot_rates(ax, xs, rates, COLORS[i % len(COLORS)], method)
        ax.axhline(50, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks([r["round"] for r in rounds])
        ax.set_title(f"held-out Oracle win rate {title}", fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("win rate (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
        else:  # round 1 has no previous round but SFT
            ax.text(0.5, 0.5, "from round 2 on", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sample_rewards(rounds: list[dict[str, Any]], path: str) -> str | None:
    """The Oracle rewards of each round's samples: one box per (round, method)."""
    methods = list(rounds[0]["methods"]) if rounds else []
    if not any(r["methods"][m].get("rewards") for r in rounds for m in r["methods"]):
        return None
    fig, ax = plt.subplots(figsize=(max(5.2, 1.3 * len(rounds) * len(methods)), 3.8))
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        data = [r["methods"].get(method, {}).get("rewards") or [np.nan] for r in rounds]
        positions = [r["round"] + (i - (len(methods) - 1) / 2) * width for r in rounds]
        box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=True)
        for patch in box["boxes"]:
            patch.set_facecolor(COLORS[i % len(COLORS)])
            patch.set_alpha(0.6)
        ax.plot([], [], color=COLORS[i % len(COLORS)], linewidth=6, alpha=0.6, label=method)
    ax.set_xticks([r["round"] for r in rounds])
    ax.set_xticklabels([str(r["round"]) for r in rounds])
    ax.set_title("Oracle reward of each round's samples", fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylabel("r*(x, y)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def online_section(run: str, figures: str, rel: Any, table: Any) -> str | None:
    """The report's section (None: the run has no finished round). ``rel`` makes a figure path
    relative to the report, ``table`` renders a Markdown table (drdo_ray/eval/report.py)."""
    rounds = load_rounds(run)
    if not rounds:
        return None
    parts = []
    for png, alt in (
        (
            plot_winrate_vs_round(rounds, storage.join(figures, "online_winrate_vs_round.png")),
            "Held-out Oracle win rate vs round",
        ),
        (
            plot_sample_rewards(rounds, storage.join(figures, "online_sample_rewards.png")),
            "Oracle reward of each round's samples",
        ),
    ):
        if png:
            parts.append(f"![{alt}]({rel(png)})")
    rows = []
    for r in rounds:
        for method, m in r["methods"].items():
            rewards = m.get("sample_rewards") or {}
            pairs = m.get("pairs") or {}
            wins = m.get("winrates") or {}
            rows.append(
                [
                    str(r["round"]),
                    method,
                    str((m.get("sampled_by") or {}).get("round", "-")),
                    str(m.get("staleness", "-")),
                    f"{pairs.get('pairs', '-')} / {pairs.get('prompts', '-')}",
                    ", ".join(f"{k} {v}" for k, v in (pairs.get("skipped") or {}).items()) or "-",
                    f"{_num(rewards.get('mean'))} [{_num(rewards.get('q25'))}, {_num(rewards.get('q75'))}]",
                    _num((pairs.get("margin") or {}).get("mean")),
                    *(
                        fmt_rate(w["win_rate"], w.get("ci95")) if (w := wins.get(which)) else "-"
                        for which in ("sft", "previous")
                    ),
                ]
            )
    parts.append(
        table(
            [
                "round",
                "method",
                "sampled by round",
                "staleness",
                "pairs / prompts",
                "prompts without a pair",
                "sample r* mean [q25, q75]",
                "mean pair margin",
                "win rate vs SFT [95% CI]",
                "vs previous round",
            ],
            rows,
            "llrrrlrrrr",
        )
    )
    parts.append(
        "Each round, a method's policy samples the round's prompts, the Oracle scores the samples and "
        "the method trains on pairs of them; staleness is the number of rounds between the policy "
        "that sampled a round's data and the one it trained (1 with `overlap: true`). Win rates: the "
        f"round's policy against SFT and against its previous round on the held-out prompts ({ROUND_FILE} "
        "under RUN/rounds/<k>/)."
    )
    return "\n\n".join(parts)
