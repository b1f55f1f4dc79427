"""CLI commands of drdo_ray.bench: `register(sub)` adds them to the `drdo-ray` parser.
Keep imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console

console = Console(stderr=True)


def cmd_bench_serve(args: argparse.Namespace) -> None:
    from ..config import BenchServeConfig, load_config

    flags = {
        name: getattr(args, name)
        for name in (
            "model",
            "out",
            "requests",
            "concurrency",
            "max_tokens",
            "max_batch_size",
            "port",
            "backend",
        )
    }
    cfg = load_config(
        BenchServeConfig,
        config_file=args.config,
        section="bench_serve",
        flags=flags,
        overrides=args.overrides,
    )
    from .serve import bench_serve

    report = bench_serve(cfg, console)
    for mode in ("batched", "sequential"):
        if mode in report:
            r = report[mode]
            console.print(
                f"  {mode:10s} max_batch_size {r['max_batch_size']:3d}: {r['succeeded']}/{r['requests']} ok, "
                f"{r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.0f} tokens/s, "
                f"p50 {r['latency_p50_s']}s, p99 {r['latency_p99_s']}s, mean batch {r['mean_batch_size']}"
            )
    if "batching_speedup" in report:
        console.print(f"  @serve.batch speed-up: {report['batching_speedup']}x")
    console.print(f"  report     {report['outputs']['report']}")


def cmd_bench_generate(args: argparse.Namespace) -> None:
    from ..config import BenchGenerateConfig, load_config

    flags = {name: getattr(args, name) for name in ("model", "out", "prompts", "max_tokens", "repeats")}
    if args.engines:
        flags["engines"] = args.engines.split(",")
    cfg = load_config(
        BenchGenerateConfig,
        config_file=args.config,
        section="bench_generate",
        flags=flags,
        overrides=args.overrides,
    )
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
    from ..config import BenchTrainConfig, load_config

    flags = {
        name: getattr(args, name)
        for name in ("model", "shape", "seq_len", "out", "pairs", "steps", "repeats")
    }
    cfg = load_config(
        BenchTrainConfig,
        config_file=args.config,
        section="bench_train",
        flags=flags,
        overrides=args.overrides,
    )
    from .train import bench_train

    report = bench_train(cfg, console)
    console.print(f"  report     {report['outputs']['report']}")


def cmd_bench_quality(args: argparse.Namespace) -> None:
    from ..config import BenchQualityConfig, load_config

    flags = {name: getattr(args, name) for name in ("out", "scale", "seeds", "flip")}
    if args.quick:
        flags["quick"] = True
    if args.shares:
        flags["shares"] = [float(x) for x in args.shares.split(",")]
    cfg = load_config(
        BenchQualityConfig,
        config_file=args.config,
        section="bench_quality",
        flags=flags,
        overrides=args.overrides,
    )
    from .quality import bench_quality

    report = bench_quality(cfg, console)
    console.print(f"  report     {report['outputs']['report']}")
    console.print(f"  plot       {report['outputs']['plot']}")


def register(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this package's subcommands. `common` adds --config and --set to a parser."""
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="BENCH"
    )
    s = bench.add_parser(
        "serve", help="load test of the OpenAI-compatible app: @serve.batch vs one at a time"
    )
    common(s)
    s.add_argument("--model", help="model folder (default: a tiny random model built on the fly)")
    s.add_argument("--out", help="output folder for bench_serve.json (default bench_serve)")
    s.add_argument("--requests", type=int, help="requests per mode (default 64)")
    s.add_argument("--concurrency", type=int, help="requests in flight (default 64)")
    s.add_argument(
        "--max-tokens", dest="max_tokens", type=int, help="tokens generated per request (default 32)"
    )
    s.add_argument("--max-batch-size", dest="max_batch_size", type=int, help="@serve.batch size (default 16)")
    s.add_argument(
        "--port", type=int, help="HTTP port (default: a free one; the running Serve's port if any)"
    )
    s.add_argument("--backend", choices=["auto", "vllm", "transformers"], help="default transformers")
    s.set_defaults(func=cmd_bench_serve)

    g = bench.add_parser(
        "generate",
        help="generation tokens/s: vLLM and the transformers engine beside plain Hugging Face "
        "generate, same prompts, same run",
    )
    common(g)
    g.add_argument("--model", help="model folder (default: a tiny random model built on the fly)")
    g.add_argument("--out", help="output folder for bench_generate.json (default bench_generate)")
    g.add_argument("--prompts", type=int, help="prompts in the batch (default 64)")
    g.add_argument("--max-tokens", dest="max_tokens", type=int, help="new tokens per prompt (default 64)")
    g.add_argument("--repeats", type=int, help="interleaved rounds, median reported (default 3)")
    g.add_argument("--engines", help="comma-separated subset of hf_generate,transformers,vllm (default all)")
    g.set_defaults(func=cmd_bench_generate)

    t = bench.add_parser(
        "train",
        help="s/step, tokens/s, memory (MFU on GPU) of the training loop per method (drdo, "
        "dpo, dpo with a live reference, edpo, sft), same model and batches, ratios to "
        "drdo; Ray overhead; TRL anchor",
    )
    common(t)
    t.add_argument("--model", help="model folder (default: a tiny random model built on the fly)")
    t.add_argument(
        "--shape",
        choices=["opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b"],
        help="a random-init model of this shape instead (no download)",
    )
    t.add_argument(
        "--seq-len",
        dest="seq_len",
        type=int,
        help="synthetic rows of exactly this many tokens (default: shipped Ultrafeedback rows)",
    )
    t.add_argument("--out", help="output folder for bench_train.json (default bench_train)")
    t.add_argument("--pairs", type=int, help="pairs per step (default 8)")
    t.add_argument("--steps", type=int, help="timed steps per repetition (default 12)")
    t.add_argument("--repeats", type=int, help="interleaved repetitions (default 3)")
    t.set_defaults(func=cmd_bench_train)

    q = bench.add_parser(
        "quality",
        help="alignment quality on a synthetic task with a known true reward: every method tuned "
        "on validation prompts, DRDO vs DPO, IPO, e-DPO by non-deterministic share",
    )
    common(q)
    q.add_argument("--out", help="output folder for bench_quality.json/.png (default bench_quality)")
    q.add_argument("--scale", type=float, help="multiplies data sizes and training steps (default 1)")
    q.add_argument("--seeds", type=int, help="seeds (default 3)")
    q.add_argument(
        "--shares",
        help="non-deterministic shares of all pairs, comma-separated (default 0,0.3,0.6; 0.8 too with --scale > 1)",
    )
    q.add_argument("--flip", type=float, help="share of deterministic labels flipped (default 0.1)")
    q.add_argument(
        "--quick", action="store_true", help="a minutes-long smoke run (1 seed, tiny sizes and grid)"
    )
    q.set_defaults(func=cmd_bench_quality)
