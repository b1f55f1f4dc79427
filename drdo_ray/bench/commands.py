"""CLI commands of drdo_ray.bench: `register(sub)` adds them to the `drdo-ray` parser.
Keep imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..cli_flags import add_common, add_config_flags, config_from_args
from ..errors import UserError
from .configs import (
    BenchGenerateConfig,
    BenchOnlineConfig,
    BenchServeConfig,
    BenchTablesConfig,
    BenchTrainConfig,
)
from .quality_config import BenchQualityConfig

console = Console(stderr=True)


def cmd_bench_serve(args: argparse.Namespace) -> None:
    cfg = config_from_args(BenchServeConfig, args, "bench_serve")
    from .serve import bench_serve

    report = bench_serve(cfg, console)
    base = report["baseline"]
    for c in report["cells"]:
        console.print(
            f"  {c['engine']:12s} {c['mode']:10s} x{c['concurrency']:<4d} {c['succeeded']}/{c['requests']} ok, "
            f"{c['requests_per_s']:.2f} req/s, {c['tokens_per_s']:.0f} tokens/s, p50 {c['latency_p50_s']}s, "
            f"p99 {c['latency_p99_s']}s, {c['vs_baseline']['requests_per_s']}x {base['engine']} {base['mode']}"
        )
    for engine, why in report["skipped"].items():
        console.print(f"  {engine:12s} skipped: {why}")
    for engine, by_concurrency in report["batching_speedup"].items():
        speedups = ", ".join(f"x{c}: {s}x" for c, s in by_concurrency.items())
        console.print(f"  @serve.batch speed-up, {engine}: {speedups}")
    console.print(f"  report     {report['outputs']['report']}")


def cmd_bench_generate(args: argparse.Namespace) -> None:
    cfg = config_from_args(BenchGenerateConfig, args, "bench_generate")
    from .generate import bench_generate

    report = bench_generate(cfg, console)
    for name, r in report["engines"].items():
        console.print(
            f"  {name:13s} {r['tokens_per_s']:8.0f} tokens/s   {r['ratio_to_hf_generate']}x hf_generate"
        )
    for name, why in report["skipped"].items():
        console.print(f"  {name:13s} skipped: {why}")
    console.print(f"  report     {report['outputs']['report']}")


def cmd_bench_train(args: argparse.Namespace) -> None:
    cfg = config_from_args(BenchTrainConfig, args, "bench_train")
    from .train import bench_train

    report = bench_train(cfg, console)
    console.print(f"  report     {report['outputs']['report']}")


def cmd_bench_quality(args: argparse.Namespace) -> None:
    cfg = config_from_args(BenchQualityConfig, args, "bench_quality")
    from .quality import bench_quality

    report = bench_quality(cfg, console)
    console.print(f"  report     {report['outputs']['report']}")
    console.print(f"  plot       {report['outputs']['plot']}")


def cmd_bench_online(args: argparse.Namespace) -> None:
    cfg = config_from_args(BenchOnlineConfig, args, "bench_online")
    from .online import bench_online

    report = bench_online(cfg, console)
    console.print(f"  report     {report['outputs']['report']}")


def cmd_bench_tables(args: argparse.Namespace) -> None:
    cfg = config_from_args(BenchTablesConfig, args, "bench_tables")
    from pathlib import Path

    from .tables import write_tables

    targets = [(Path(cfg.readme), True)] + ([(Path(cfg.docs), False)] if cfg.docs else [])
    stale = []
    for path, figures in targets:
        if not cfg.check:
            path.parent.mkdir(parents=True, exist_ok=True)
        if not write_tables(Path(cfg.folder), path, figures=figures, check=cfg.check):
            stale.append(str(path))
        elif not cfg.check:
            console.print(f"  wrote      {path}")
    if stale:
        raise UserError(f"{', '.join(stale)} differ from {cfg.folder}/*.json: run drdo-ray bench tables")
    if cfg.check:
        console.print(f"  up to date {', '.join(str(p) for p, _ in targets)}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; their flags are the fields of their configs."""
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="BENCH"
    )
    for name, cls, func, text in (
        (
            "serve",
            BenchServeConfig,
            cmd_bench_serve,
            "load table of the OpenAI-compatible app: engine x concurrency (x @serve.batch or one at a time), "
            "throughput, p50/p99 latency, errors, ratios to the first engine in the same run",
        ),
        (
            "generate",
            BenchGenerateConfig,
            cmd_bench_generate,
            "generation tokens/s: vLLM and the transformers engine beside plain Hugging Face generate, "
            "same prompts, same run",
        ),
        (
            "train",
            BenchTrainConfig,
            cmd_bench_train,
            "s/step, tokens/s, memory (MFU on GPU) of the training loop per method (drdo, dpo, dpo with a "
            "live reference, edpo, sft), same model and batches, ratios to drdo; Ray overhead; TRL anchor",
        ),
        (
            "quality",
            BenchQualityConfig,
            cmd_bench_quality,
            "alignment quality on a synthetic task with a known true reward: every method tuned alike on "
            "tuning seeds, per-seed paired differences against DPO and SFT on fresh seeds, by arm and share; "
            "--regime online also trains every row in rounds on its own Oracle-labelled samples",
        ),
        (
            "online",
            BenchOnlineConfig,
            cmd_bench_online,
            "wall time of a pipeline's online rounds with overlap false and true from the same start, "
            "their ratio, each round's staleness and win rates",
        ),
        (
            "tables",
            BenchTablesConfig,
            cmd_bench_tables,
            "Markdown tables of the committed benchmark JSON files (benchmarks/README.md, docs/benchmarks.md)",
        ),
    ):
        p = bench.add_parser(name, help=text)
        add_common(p)
        add_config_flags(p, cls)
        p.set_defaults(func=func)
