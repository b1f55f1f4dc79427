"""The `drdo-ray` command. Each subcommand takes --config FILE and --set key=value, validates
into a typed config (config.py), runs, and prints where it wrote its outputs. Errors the user
can fix are one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from .config import SOURCE_NAMES, PrepareConfig, TinyModelConfig, load_config
from .errors import UserError

console = Console(stderr=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with this stage's settings")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting (repeatable; dotted keys for nested settings)",
    )


def _flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def cmd_models_tiny(args: argparse.Namespace) -> None:
    cfg = load_config(
        TinyModelConfig, config_file=args.config, section="tiny_model",
        flags=_flags(args, ["out", "seed", "arch", "hidden_size", "num_layers", "vocab_size"]),
        overrides=args.overrides,
    )
    from .models import build_tiny_model

    path = build_tiny_model(
        cfg.out, seed=cfg.seed, arch=cfg.arch, hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers, vocab_size=cfg.vocab_size,
    )
    console.print(f"tiny {cfg.arch} model + tokenizer written to [bold]{path}[/]")
    print(path)


def cmd_data_prepare(args: argparse.Namespace) -> None:
    cfg = load_config(
        PrepareConfig, config_file=args.config, section="data",
        flags=_flags(args, ["source", "input", "out", "hub_split", "tldr_split", "tokenizer",
                            "max_prompt_length", "max_length"]),
        overrides=args.overrides,
    )
    from .data.prepare import prepare

    stats = prepare(cfg, console)
    console.print(
        f"kept {stats['rows_written']} of {stats['rows_read']} rows "
        f"({stats['rows_rejected']} rejected) in {stats['elapsed_s']:.1f}s, {stats['rows_per_s']:.0f} rows/s"
    )
    if stats["rejected_by_reason"]:
        console.print("rejected by reason: " + json.dumps(stats["rejected_by_reason"]))
    for name, where in stats["outputs"].items():
        console.print(f"  {name:8s} {where}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, force=args.force, console=console)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drdo-ray", description="DRDO preference alignment on Ray: data, training, serving, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the pipeline end to end on the shipped samples (CPU, offline)")
    _common(demo)
    demo.add_argument("--out", default="demo_run", help="run directory (default: demo_run)")
    demo.add_argument("--force", action="store_true", help="rerun stages whose outputs exist")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="build models").add_subparsers(dest="models_command", required=True)
    tiny = models.add_parser("tiny", help="write a tiny random-init causal LM + locally trained tokenizer")
    _common(tiny)
    tiny.add_argument("--out", help="output folder (loadable with from_pretrained)")
    tiny.add_argument("--seed", type=int)
    tiny.add_argument("--arch", choices=["llama", "opt"])
    tiny.add_argument("--hidden-size", dest="hidden_size", type=int)
    tiny.add_argument("--num-layers", dest="num_layers", type=int)
    tiny.add_argument("--vocab-size", dest="vocab_size", type=int)
    tiny.set_defaults(func=cmd_models_tiny)

    data = sub.add_parser("data", help="prepare datasets").add_subparsers(dest="data_command", required=True)
    prep = data.add_parser("prepare", help="normalize, tokenize, filter and split a source into Parquet")
    _common(prep)
    prep.add_argument("--source", choices=SOURCE_NAMES)
    prep.add_argument("--input", help="path (jsonl/json/parquet, local or s3://), 'sample', or a hub id")
    prep.add_argument("--out", help="output folder: data/, rejects.jsonl, stats.json")
    prep.add_argument("--hub-split", dest="hub_split", help="split to load from the hub (default per source)")
    prep.add_argument("--tldr-split", dest="tldr_split", choices=["easy", "hard", "full"])
    prep.add_argument("--tokenizer", help="tokenizer folder or hub id: adds token ids and the length filter")
    prep.add_argument("--max-prompt-length", dest="max_prompt_length", type=int)
    prep.add_argument("--max-length", dest="max_length", type=int)
    prep.set_defaults(func=cmd_data_prepare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except UserError as err:
        print(f"drdo-ray: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drdo-ray: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
