"""CLI command of drdo_ray.serve: `register(sub)` adds `serve` to the `drdo-ray` parser. Keep
imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from ..cli_flags import add_common, add_config_flags, config_from_args
from ..config import API_KEY_ENV, ServeConfig

console = Console(stderr=True)


def cmd_serve(args: argparse.Namespace) -> None:
    cfg = config_from_args(
        ServeConfig, args, "serve", {"api_key": args.api_key or os.environ.get(API_KEY_ENV)}
    )
    from .app import run_server

    run_server(cfg, console)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve`; its flags are ServeConfig's fields."""
    s = sub.add_parser("serve", help="serve a model with an OpenAI-compatible API on Ray Serve")
    add_common(s)
    add_config_flags(s, ServeConfig)
    s.set_defaults(func=cmd_serve)
