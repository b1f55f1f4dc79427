"""CLI commands of drdo_ray.eval: `register(sub)` adds them to the `drdo-ray` parser.
Keep imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def _flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in names}


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
    from ..config import WinrateConfig, load_config

    cfg = load_config(
        WinrateConfig,
        config_file=args.config,
        section="winrate",
        flags=_flags(
            args,
            [
                "a",
                "b",
                "oracle",
                "out",
                "a_name",
                "b_name",
                "tie_margin",
                "batch_size",
                "num_actors",
                "bootstrap",
                "seed",
                "bin_width",
                "ood_temperature",
            ],
        ),
        overrides=args.overrides,
    )
    from .winrate import run_winrate

    result = run_winrate(cfg, console)
    console.print(
        _rate_table(f"Oracle win rate: {result['a']['name']} vs {result['b']['name']}", result, ["adv A"])
    )
    _outputs(result["outputs"])
    print(result["outputs"]["winrate"])


def cmd_judge(args: argparse.Namespace) -> None:
    from ..config import JudgeConfig, load_config

    cfg = load_config(
        JudgeConfig,
        config_file=args.config,
        section="judge",
        flags=_flags(
            args,
            [
                "a",
                "b",
                "out",
                "model",
                "base_url",
                "task",
                "orders",
                "max_concurrency",
                "max_cost",
                "max_pairs",
                "cache",
                "tokenizer",
                "a_name",
                "b_name",
                "seed",
                "scores",
                "bootstrap",
                "bin_width",
                "ood_temperature",
            ],
        ),
        overrides=args.overrides,
    )
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
    from ..config import KLConfig, load_config

    cfg = load_config(
        KLConfig,
        config_file=args.config,
        section="kl",
        flags=_flags(
            args,
            [
                "policy",
                "reference",
                "samples",
                "out",
                "label",
                "step",
                "temperature",
                "batch_size",
                "num_actors",
            ],
        ),
        overrides=args.overrides,
    )
    from .kl import run_kl

    result = run_kl(cfg, console)
    console.print(
        f"KL({result['label']} || reference) = {result['kl']:.4f} per token (±{result['kl_std'] or 0:.4f} over "
        f"{result['n_samples']} samples, {result['n_tokens']} tokens; sampled estimate {result['kl_sampled']:.4f})"
    )
    _outputs(result["outputs"])
    print(result["outputs"]["kl"])


def cmd_ood(args: argparse.Namespace) -> None:
    from ..config import OODConfig, load_config

    cfg = load_config(
        OODConfig,
        config_file=args.config,
        section="ood",
        flags=_flags(args, ["result", "bin_width", "temperature"]),
        overrides=args.overrides,
    )
    from .ood import markdown_table, rebin

    result = rebin(cfg)
    console.print(markdown_table(result))
    _outputs(result["outputs"])
    print(result["outputs"]["ood"])


def cmd_report(args: argparse.Namespace) -> None:
    from ..config import ReportConfig, load_config

    cfg = load_config(
        ReportConfig,
        config_file=args.config,
        section="report",
        flags=_flags(args, ["run", "out", "title"]),
        overrides=args.overrides,
    )
    from .report import build_report

    result = build_report(cfg)
    console.print(
        f"report of {len(result['training_runs'])} training run(s) and "
        f"{sum(result['results'].values())} result file(s), {len(result['figures'])} figure(s)"
    )
    console.print(f"  report     {result['report']}")
    print(result["report"])


def _comparison_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", help="generation folder of policy A (samples.jsonl|parquet + generation.json)")
    p.add_argument(
        "--b", help="generation folder of policy B, or 'reference' for the prompts' reference responses"
    )
    p.add_argument("--out", help="output folder (e.g. RUN/eval/<name>)")
    p.add_argument("--a-name", dest="a_name", help="label of A (default: its generation's model folder name)")
    p.add_argument("--b-name", dest="b_name", help="label of B")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for the 95%% interval (default 2000)")
    p.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    p.add_argument(
        "--bin-width", dest="bin_width", type=int, help="OOD bins: prompt tokens per bin (default 50)"
    )
    p.add_argument(
        "--ood-temperature",
        dest="ood_temperature",
        type=float,
        help="OOD bins from this temperature only (default: all)",
    )


def register(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this package's subcommands. `common` adds --config and --set to a parser."""
    evaluate = sub.add_parser("eval", help="evaluate policies: Oracle and judge win rates, KL, OOD bins")
    kinds = evaluate.add_subparsers(dest="eval_command", required=True, metavar="KIND")

    wr = kinds.add_parser("winrate", help="Oracle win rate of A over B per temperature (Ray Data actor pool)")
    common(wr)
    _comparison_args(wr)
    wr.add_argument("--oracle", help="Oracle folder (LM + reward head)")
    wr.add_argument(
        "--tie-margin", dest="tie_margin", type=float, help="|r_A - r_B| <= this is a tie (default 0)"
    )
    wr.add_argument("--batch-size", dest="batch_size", type=int, help="responses per forward pass")
    wr.add_argument(
        "--num-actors", dest="num_actors", type=int, help="scoring actors (one GPU each where CUDA exists)"
    )
    wr.set_defaults(func=cmd_winrate)

    jd = kinds.add_parser(
        "judge", help="LLM-judge win rate through an OpenAI-compatible API (key: OPENAI_API_KEY)"
    )
    common(jd)
    _comparison_args(jd)
    jd.add_argument("--model", help="judge model (default gpt-4o)")
    jd.add_argument(
        "--base-url", dest="base_url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
    jd.add_argument(
        "--task",
        choices=["auto", "summarize", "instruct"],
        help="prompt template: summarize (App. G) or instruct (AlpacaEval); auto by the prompts' chat flag",
    )
    jd.add_argument(
        "--orders",
        choices=["both", "random"],
        help="both orders per pair (default) or one seeded random order",
    )
    jd.add_argument(
        "--scores",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also ask for scores in [0, 1] (paper Fig. 9; default on)",
    )
    jd.add_argument(
        "--max-concurrency", dest="max_concurrency", type=int, help="requests in flight (default 8)"
    )
    jd.add_argument("--max-cost", dest="max_cost", type=float, help="USD: stop before spending more")
    jd.add_argument("--max-pairs", dest="max_pairs", type=int, help="judge a seeded random subset of N pairs")
    jd.add_argument("--cache", help="SQLite cache of answers (default OUT/judge_cache.sqlite)")
    jd.add_argument(
        "--tokenizer", help="tokenizer for the OOD bins' prompt lengths (default: A's model folder)"
    )
    jd.set_defaults(func=cmd_judge)

    kl = kinds.add_parser(
        "kl", help="token-averaged KL of a policy from its SFT model on its own samples (App. J)"
    )
    common(kl)
    kl.add_argument("--policy", help="policy model folder")
    kl.add_argument("--reference", help="SFT (reference) model folder")
    kl.add_argument("--samples", help="generation folder of the policy's own samples")
    kl.add_argument("--out", help="output folder (e.g. RUN/eval/kl-<name>)")
    kl.add_argument("--label", help="column label in the report's KL table (default: policy folder name)")
    kl.add_argument("--step", type=int, help="training step of this checkpoint (row in the KL table)")
    kl.add_argument("--temperature", type=float, help="only samples at this temperature (paper: 0.7)")
    kl.add_argument("--batch-size", dest="batch_size", type=int)
    kl.add_argument("--num-actors", dest="num_actors", type=int)
    kl.set_defaults(func=cmd_kl)

    ood = kinds.add_parser("ood", help="rebin a winrate/judge result by prompt token length (App. F.2)")
    common(ood)
    ood.add_argument("--result", help="a winrate or judge output folder")
    ood.add_argument("--bin-width", dest="bin_width", type=int, help="prompt tokens per bin (default 50)")
    ood.add_argument("--temperature", type=float, help="only pairs sampled at this temperature")
    ood.set_defaults(func=cmd_ood)

    report = sub.add_parser(
        "report", help="Markdown + PNG report of a run directory (training curves, win rates, KL)"
    )
    common(report)
    report.add_argument("--run", help="run directory (reads train/*/ and eval/**/)")
    report.add_argument("--out", help="output folder (default RUN/report)")
    report.add_argument("--title", help="report title")
    report.set_defaults(func=cmd_report)
