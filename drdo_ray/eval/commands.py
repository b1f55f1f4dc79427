"""CLI commands of drdo_ray.eval: `register(sub)` adds them to the `drdo-ray` parser.
Keep imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from ..cli_flags import add_common, add_config_flags, config_from_args
from ..config import JudgeConfig, KLConfig, OODConfig, ReportConfig, WinrateConfig

console = Console(stderr=True)


def _rate_table(title: str, result: dict[str, Any], extra: Sequence[str] = ()) -> Table:
    from .stats import fmt_ci, fmt_rate

    table = Table(title=title)
    for column in ("T", "pairs", "wins", "ties", "losses", "win rate of A", "95% CI", *extra):
        table.add_column(column, justify="left" if column == "T" else "right")
    for key, g in [*result.get("by_temperature", {}).items(), ("all", result)]:
        cells = [
            key,
            str(g["n"]),
            str(g["wins"]),
            str(g["ties"]),
            str(g["losses"]),
            fmt_rate(g["win_rate"]),
            fmt_ci(g.get("ci95")),
        ]
        if "adv A" in extra:
            adv = (g.get("reward_advantage") or {}).get("a")
            cells.append(f"{adv['mean']:+.3f}" if adv and adv.get("mean") is not None else "-")
        if "dropped" in extra:
            cells.append(str(g.get("dropped", "")))
        table.add_row(*cells)
    return table


def _outputs(outputs: dict[str, str]) -> None:
    for name, where in outputs.items():
        console.print(f"  {name:10s} {where}")


def cmd_winrate(args: argparse.Namespace) -> None:
    cfg = config_from_args(WinrateConfig, args, "winrate")
    from .winrate import run_winrate

    result = run_winrate(cfg, console)
    console.print(
        _rate_table(f"Oracle win rate: {result['a']['name']} vs {result['b']['name']}", result, ["adv A"])
    )
    _outputs(result["outputs"])
    print(result["outputs"]["winrate"])


def cmd_judge(args: argparse.Namespace) -> None:
    cfg = config_from_args(JudgeConfig, args, "judge")
    from .judge import run_judge

    result = run_judge(cfg, console)
    console.print(
        _rate_table(
            f"Judge ({cfg.model}) win rate: {result['a']['name']} vs {result['b']['name']}",
            result,
            ["dropped"],
        )
    )
    console.print(
        f"dropped {result['dropped']} {result['dropped_by_reason'] or ''}, not judged {result['not_judged']}; "
        f"{result['requests']} requests ({result['retries']} retries), {result['cache_hits']} cache hits, "
        f"{result['tokens']['total']} tokens, ${result['cost_usd']:.4f}"
        + (" — stopped at --max-cost" if result["stopped_reason"] else "")
    )
    _outputs(result["outputs"])
    print(result["outputs"]["judge"])


def cmd_kl(args: argparse.Namespace) -> None:
    cfg = config_from_args(KLConfig, args, "kl")
    from .kl import run_kl

    result = run_kl(cfg, console)
    console.print(
        f"KL({result['label']} || reference) = {result['kl']:.4f} per token (±{result['kl_std'] or 0:.4f} over "
        f"{result['n_samples']} samples, {result['n_tokens']} tokens; sampled estimate {result['kl_sampled']:.4f})"
    )
    _outputs(result["outputs"])
    print(result["outputs"]["kl"])


def cmd_ood(args: argparse.Namespace) -> None:
    cfg = config_from_args(OODConfig, args, "ood")
    from .ood import markdown_table, rebin

    result = rebin(cfg)
    console.print(markdown_table(result))
    _outputs(result["outputs"])
    print(result["outputs"]["ood"])


def cmd_report(args: argparse.Namespace) -> None:
    cfg = config_from_args(ReportConfig, args, "report")
    from .report import build_report

    result = build_report(cfg)
    console.print(
        f"report of {len(result['training_runs'])} training run(s) and "
        f"{sum(result['results'].values())} result file(s), {len(result['figures'])} figure(s)"
    )
    console.print(f"  report     {result['report']}")
    print(result["report"])


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; their flags are the fields of their configs."""
    evaluate = sub.add_parser("eval", help="evaluate policies: Oracle and judge win rates, KL, OOD bins")
    kinds = evaluate.add_subparsers(dest="eval_command", required=True, metavar="KIND")
    gpus = {"num_gpus_per_actor": {"flags": ["--num-gpus-per-actor", "--num-gpus"]}}
    for name, cls, func, text in (
        (
            "winrate",
            WinrateConfig,
            cmd_winrate,
            "Oracle win rate of A over B per temperature (Ray Data actor pool)",
        ),
        (
            "judge",
            JudgeConfig,
            cmd_judge,
            "LLM-judge win rate through an OpenAI-compatible API (key: OPENAI_API_KEY)",
        ),
        (
            "kl",
            KLConfig,
            cmd_kl,
            "token-averaged KL of a policy from its SFT model on its own samples (App. J)",
        ),
        ("ood", OODConfig, cmd_ood, "rebin a winrate/judge result by prompt token length (App. F.2)"),
    ):
        p = kinds.add_parser(name, help=text)
        add_common(p)
        add_config_flags(p, cls, custom=gpus if "num_gpus_per_actor" in cls.model_fields else None)
        p.set_defaults(func=func)

    report = sub.add_parser(
        "report", help="Markdown + PNG report of a run directory (training curves, win rates, KL)"
    )
    add_common(report)
    add_config_flags(report, ReportConfig)
    report.set_defaults(func=cmd_report)
