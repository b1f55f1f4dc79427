"""`drdo-ray report --run RUN`: one Markdown report with PNG figures for a run directory.

Reads the run directory (:class:`~drdo_ray.run_layout.RunLayout`: ``RUN/train/*/metrics.jsonl``,
``RUN/eval/**/{winrate,judge,kl,ood}.json``, ``RUN/models/*/drdo_training.json``) and writes

    RUN/report/report.md           headline table, then one section per evaluation
    RUN/report/figures/*.png       training curves (Fig. 5), win rate vs temperature (Fig. 2),
                                   win rate by prompt length (Fig. 6)

Sections whose inputs are absent say so in one line rather than failing: a report of a run
that has only trained is still a report.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import fsspec

from .. import storage
from ..config import ReportConfig
from ..errors import UserError
from ..run_layout import REPORT_FILE, RunLayout
from . import plots
from .online_report import online_section
from .results import find_results
from .stats import fmt_ci, fmt_rate

# ------------------------------------------------------------------------------ loading


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    fs, root = fsspec.core.url_to_fs(path)
    rows = []
    with fs.open(root, "r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write: the rest of the curve still plots
    return rows


def _subdirs(path: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.isdir(root):
        return []
    return sorted(PurePosixPath(p.rstrip("/")).name for p in fs.ls(root, detail=False) if fs.isdir(p))


def load_training(run: str) -> dict[str, dict[str, Any]]:
    """Per training run: ``metrics`` (column lists over ``step``), ``status``, ``config``."""
    layout = RunLayout(run)
    runs: dict[str, dict[str, Any]] = {}
    for name in _subdirs(layout.train_root):
        metrics_path = layout.metrics(name)
        if not storage.exists(metrics_path):
            continue
        by_step: dict[int, dict[str, Any]] = {}
        for row in _read_jsonl(metrics_path):
            if isinstance(row.get("step"), (int, float)):
                by_step[int(row["step"])] = row  # a resumed run rewrote these steps: the last wins
        columns: dict[str, list[float]] = defaultdict(list)
        keys = sorted({k for row in by_step.values() for k, v in row.items() if isinstance(v, (int, float))})
        for step in sorted(by_step):
            row = by_step[step]
            for key in keys:
                value = row.get(key)
                columns[key].append(
                    float(value) if isinstance(value, (int, float)) and value is not None else math.nan
                )
        status_path = layout.train_status(name)
        config_path = layout.training_config(name)
        runs[name] = {
            "metrics": dict(columns),
            "status": storage.read_json(status_path) if storage.exists(status_path) else {},
            "config": storage.read_json(config_path) if storage.exists(config_path) else {},
        }
    return runs


def _stage(name: str, info: dict[str, Any]) -> str:
    stage = info["config"].get("stage")
    if stage:
        return str(stage)
    for prefix in ("align", "oracle", "sft"):
        if name.startswith(prefix):
            return prefix
    return "align" if "reward_accuracy" in info["metrics"] and "chosen_logps" in info["metrics"] else "other"


def _reduction(name: str, info: dict[str, Any]) -> str | None:
    """How the run reduced log-probs over tokens: its config's ``reduction``, else the default of
    train/stage.py ``reduction_of`` (mean for SFT, the Oracle and the DRDO family; sum for the
    DPO family)."""
    cfg = info["config"]
    if cfg.get("reduction"):
        return str(cfg["reduction"])
    stage, loss = cfg.get("stage") or _stage(name, info), cfg.get("loss") or ""
    if stage != "align":
        return "mean"
    if not loss:
        return None
    return "mean" if loss.startswith("drdo") else "sum"


def load_results(run: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("winrate", "judge", "kl", "ood"):
        items = []
        for path in find_results(run, f"{kind}.json"):
            try:
                data = storage.read_json(path)
            except ValueError:
                continue
            data["_path"] = path
            data["_dir"] = path.rsplit("/", 1)[0]
            items.append(data)
        out[kind] = items
    return out


# ---------------------------------------------------------------------------- rendering


def _name(side: dict[str, Any] | None) -> str:
    return str((side or {}).get("name") or "?")


def _dataset(result: dict[str, Any]) -> str:
    gen = (result.get("a") or {}).get("generation") or {}
    where = gen.get("dataset") or gen.get("prompts")
    if not where:
        return "-"
    path = PurePosixPath(str(where).rstrip("/"))
    return path.parent.name if path.name == "data" and path.parent.name else path.name


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _mean(entry: Any) -> Any:
    return entry.get("mean") if isinstance(entry, dict) else entry


def _rel(path: str, run_out: str) -> str:
    return path[len(run_out.rstrip("/")) + 1 :] if path.startswith(run_out.rstrip("/") + "/") else path


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _headline(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for r in results["winrate"]:
        rows.append(
            [
                f"{_name(r['a'])} vs {_name(r['b'])}",
                "Oracle",
                _dataset(r),
                str(r["n"]),
                str(r["wins"]),
                str(r["ties"]),
                str(r["losses"]),
                "-",
                fmt_rate(r["win_rate"], r.get("ci95")),
            ]
        )
    for r in results["judge"]:
        rows.append(
            [
                f"{_name(r['a'])} vs {_name(r['b'])}",
                f"judge {r['judge']['model']}",
                _dataset(r),
                str(r["n"]),
                str(r["wins"]),
                str(r["ties"]),
                str(r["losses"]),
                str(r["dropped"]),
                fmt_rate(r["win_rate"], r.get("ci95")),
            ]
        )
    if not rows:
        return "_No win-rate results under RUN/eval yet._"
    return _table(
        [
            "comparison",
            "evaluator",
            "prompts",
            "pairs",
            "wins",
            "ties",
            "losses",
            "dropped",
            "win rate of A [95% CI]",
        ],
        rows,
        "lllrrrrrr",
    )


def _training_section(runs: dict[str, dict[str, Any]], figures: str, out: str) -> str:
    if not runs:
        return "_No training runs (RUN/train/*/metrics.jsonl)._"
    parts = []
    groups: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, info in runs.items():
        groups[_stage(name, info)][name] = info
    titles = {
        "align": "Policy alignment (paper Fig. 5)",
        "oracle": "Oracle",
        "sft": "SFT",
        "other": "Other runs",
    }
    for stage in ("align", "oracle", "sft", "other"):
        if stage not in groups:
            continue
        series = {
            name: {**info["metrics"], "_reduction": _reduction(name, info)}
            for name, info in groups[stage].items()
        }
        png = plots.plot_training_curves(
            series, storage.join(figures, f"training_{stage}.png"), title=titles[stage]
        )
        if png:
            parts.append(f"### {titles[stage]}\n\n![{titles[stage]}]({_rel(png, out)})")
    rows = []
    for name, info in runs.items():
        status, cfg = info["status"], info["config"]
        m = info["metrics"]

        def last(key: str, m: dict[str, list[float]] = m) -> str:
            values = [v for v in m.get(key, []) if math.isfinite(v)]
            return _num(values[-1]) if values else "-"

        rows.append(
            [
                name,
                str(cfg.get("stage") or _stage(name, info)),
                str(cfg.get("loss") or "-"),
                str(status.get("global_step", len(m.get("step", [])))),
                str(status.get("status", "-")),
                last("loss"),
                last("reward_accuracy"),
                last("margin"),
                last("chosen_logps"),
                last("rejected_logps"),
            ]
        )
    parts.append(
        _table(
            [
                "run",
                "stage",
                "loss",
                "steps",
                "status",
                "final loss",
                "reward acc",
                "margin",
                "chosen logp",
                "rejected logp",
            ],
            rows,
            "llllrrrrrr",
        )
    )
    return "\n\n".join(parts)


def _winrate_section(results: list[dict[str, Any]], figures: str, out: str) -> str:
    if not results:
        return "_No Oracle win rates (RUN/eval/*/winrate.json)._"
    panels: dict[str, dict[str, dict[float, tuple[float, Any]]]] = defaultdict(dict)
    rows = []
    for r in results:
        a, b = _name(r["a"]), _name(r["b"])
        points = {}
        for key, g in r.get("by_temperature", {}).items():
            try:
                t = float(key)
            except ValueError:
                continue
            if g.get("win_rate") is not None:
                points[t] = (g["win_rate"], g.get("ci95"))
        if points:
            panels[a][b] = points
        for key, g in [*r.get("by_temperature", {}).items(), ("all", r)]:
            adv = g.get("reward_advantage") or {}
            rows.append(
                [
                    f"{a} vs {b}",
                    key,
                    str(g["n"]),
                    f"{g['wins']}/{g['ties']}/{g['losses']}",
                    fmt_rate(g["win_rate"], g.get("ci95")),
                    _num(g.get("mean_reward_a")),
                    _num(g.get("mean_reward_b")),
                    _num(_mean(adv.get("a"))),
                    _num(_mean(adv.get("b"))),
                ]
            )
    parts = []
    png = plots.plot_winrate_vs_temperature(panels, storage.join(figures, "winrate_vs_temperature.png"))
    if png:
        parts.append(f"![Oracle win rate vs temperature]({_rel(png, out)})")
    parts.append(
        _table(
            [
                "comparison",
                "T",
                "pairs",
                "W/T/L",
                "win rate of A [95% CI]",
                "mean r*(A)",
                "mean r*(B)",
                "adv. A over ref",
                "adv. B over ref",
            ],
            rows,
            "llrrrrrrr",
        )
    )
    parts.append(
        "Ties count half. Reward advantage: mean r*(x, y) − r*(x, y_ref) over prompts with a "
        "reference response (paper Fig. 5b)."
    )
    return "\n\n".join(parts)


def _judge_section(results: list[dict[str, Any]]) -> str:
    if not results:
        return "_No judge results (RUN/eval/*/judge.json)._"
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_dataset[_dataset(r)].append(r)
    parts = []
    for dataset, items in sorted(by_dataset.items()):
        rows = []
        for r in items:
            rows.append(
                [
                    f"{_name(r['a'])} vs. {_name(r['b'])}",
                    str(r["wins"]),
                    fmt_rate(r["win_rate"]),
                    str(r["ties"]),
                    str(r["losses"]),
                    str(r["dropped"]),
                    fmt_ci(r.get("ci95")),
                    r["judge"]["model"],
                    str(r["requests"]),
                    str(r["cache_hits"]),
                    f"${r['cost_usd']:.2f}",
                ]
            )
        parts.append(
            f"**Comparison ({dataset})**\n\n"
            + _table(
                [
                    "Comparison",
                    "# Wins",
                    "Win Rate",
                    "ties",
                    "losses",
                    "dropped",
                    "95% CI",
                    "judge",
                    "requests",
                    "cache hits",
                    "cost",
                ],
                rows,
                "lrrrrrrlrrr",
            )
        )
    parts.append(
        "Win rate of the first-named policy; ties count half; dropped pairs (no parseable verdict) are "
        "out of the denominator (paper Table 1)."
    )
    return "\n\n".join(parts)


def _ood_section(results: list[dict[str, Any]], figures: str, out: str) -> str:
    if not results:
        return "_No OOD bins (RUN/eval/*/ood.json)._"
    parts = []
    by_source: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for r in results:
        by_source[r.get("source") or "winrate"][f"{r.get('a')} vs {r.get('b')}"] = r.get("bins", [])
    for source, series in sorted(by_source.items()):
        label = "judge" if source == "judge" else "Oracle"
        png = plots.plot_ood(
            series,
            storage.join(figures, f"ood_{source}.png"),
            title=f"{label} win rate by prompt length (paper Fig. 6)",
        )
        if png:
            parts.append(f"![{label} win rate by prompt length]({_rel(png, out)})")
    for r in results:
        evaluator = "judge" if r.get("source") == "judge" else "Oracle"
        rows = [
            [
                b["label"],
                str(b["n"]),
                f"{b['wins']}/{b['ties']}/{b['losses']}",
                fmt_rate(b["win_rate"], b.get("ci95")),
            ]
            for b in r.get("bins", [])
        ]
        temp = f", T={r['at_temperature']:g}" if r.get("at_temperature") is not None else ""
        parts.append(
            f"<details><summary>{r.get('a')} vs {r.get('b')} ({evaluator}{temp}): {len(rows)} bins of "
            f"{r.get('bin_width')} tokens</summary>\n\n"
            + _table(["prompt tokens", "pairs", "W/T/L", "win rate of A [95% CI]"], rows, "lrrr")
            + "\n\n</details>"
        )
    return "\n\n".join(parts)


def _kl_section(results: list[dict[str, Any]]) -> str:
    if not results:
        return "_No KL results (RUN/eval/*/kl.json)._"
    labels = sorted({str(r.get("label")) for r in results})
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    for r in results:
        step = "final" if r.get("step") is None else str(r["step"])
        cells[step][str(r.get("label"))] = _num(r.get("kl"), 3)
    steps = sorted(cells, key=lambda s: (s == "final", int(s) if s.isdigit() else 0))
    table = _table(["Step", *labels], [[s, *[cells[s].get(label, "-") for label in labels]] for s in steps])
    return table + (
        "\n\nToken-averaged KL(policy ‖ SFT) on each policy's own samples, mean over samples (paper Table 7)."
    )


def _configs_section(
    runs: dict[str, dict[str, Any]], results: dict[str, list[dict[str, Any]]], run: str
) -> str:
    blocks = []

    def block(title: str, data: Any) -> None:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        blocks.append(f"<details><summary>{title}</summary>\n\n```json\n{text}\n```\n\n</details>")

    for name, info in runs.items():
        if info["config"]:
            block(f"training: {name}", info["config"])
    seen = set()
    for kind in ("winrate", "judge", "kl"):
        for r in results[kind]:
            for side in ("a", "b"):
                gen = (r.get(side) or {}).get("generation")
                if kind == "kl":
                    gen = (r.get("samples") or {}).get("generation") if side == "a" else None
                sample_path = (
                    (r.get(side) or {}).get("samples")
                    if kind != "kl"
                    else (r.get("samples") or {}).get("samples")
                )
                if gen and sample_path not in seen:
                    seen.add(sample_path)
                    block(f"generation: {sample_path}", gen)
            settings = {
                k: v
                for k, v in r.items()
                if k
                in (
                    "judge",
                    "oracle",
                    "tie_margin",
                    "bootstrap",
                    "policy",
                    "reference",
                    "max_cost",
                    "price_per_1k",
                    "step",
                )
            }
            block(f"{kind}: {_rel(r['_dir'], run)}", settings)
    return "\n\n".join(blocks) if blocks else "_No configs found._"


def build_report(cfg: ReportConfig) -> dict[str, Any]:
    layout = RunLayout(cfg.run).absolute()
    run = layout.root
    if not storage.exists(run):
        raise UserError(f"run directory not found: {run}")
    out = (cfg.out or layout.report).rstrip("/")
    figures = storage.join(out, "figures")
    storage.makedirs(figures)
    runs = load_training(run)
    results = load_results(run)
    online = online_section(run, figures, lambda png: _rel(png, out), _table)
    if not runs and not any(results.values()) and not online:
        raise UserError(
            f"{run} holds neither training runs (train/*/metrics.jsonl) nor results (eval/**/*.json)"
        )
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"# {cfg.title or 'DRDO run report'}\n\nRun: `{run}` · generated {now} by `drdo-ray report`.",
        "## Headline\n\n" + _headline(results),
        "## Training curves\n\n" + _training_section(runs, figures, out),
        "## Oracle win rate vs sampling temperature (paper Fig. 2)\n\n"
        + _winrate_section(results["winrate"], figures, out),
        "## Judge win rates (paper Table 1)\n\n" + _judge_section(results["judge"]),
        "## Win rate by prompt length: OOD (paper Fig. 6)\n\n" + _ood_section(results["ood"], figures, out),
        "## KL divergence from the SFT model (paper Table 7)\n\n" + _kl_section(results["kl"]),
        *(["## Online rounds\n\n" + online] if online else []),
        "## Configs\n\n" + _configs_section(runs, results, run),
    ]
    report_path = storage.join(out, REPORT_FILE)
    fs, root = fsspec.core.url_to_fs(report_path)
    with fs.open(root, "w", encoding="utf-8") as f:
        f.write("\n\n".join(sections) + "\n")
    fs_fig, fig_root = fsspec.core.url_to_fs(figures)
    pngs = (
        sorted(p for p in fs_fig.ls(fig_root, detail=False) if p.endswith(".png"))
        if fs_fig.isdir(fig_root)
        else []
    )
    return {
        "report": report_path,
        "figures": pngs,
        "training_runs": sorted(runs),
        "results": {k: len(v) for k, v in results.items()},
    }
