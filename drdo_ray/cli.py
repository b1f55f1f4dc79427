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

from .cli_flags import add_common, add_config_flags, config_from_args
from .cli_help import finish
from .config import (
    ALIGN_LOSS_NAMES,
    PrepareConfig,
    ScoreConfig,
    TinyModelConfig,
    TrainConfig,
    load_config,
)
from .errors import UserError
from .pipeline_config import PipelineConfig
from .shipped_configs import configs_dir, describe, shipped_configs

console = Console(stderr=True)


def cmd_models_tiny(args: argparse.Namespace) -> None:
    cfg = config_from_args(TinyModelConfig, args, "tiny_model")
    import contextlib

    # stdout carries only the path (for scripts): with accelerate installed, transformers
    # imports DeepSpeed, whose logger prints to stdout.
    with contextlib.redirect_stdout(sys.stderr):
        from .models import build_tiny_model

        path = build_tiny_model(
            cfg.out,
            seed=cfg.seed,
            arch=cfg.arch,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            vocab_size=cfg.vocab_size,
        )
    console.print(f"tiny {cfg.arch} model + tokenizer written to [bold]{path}[/]")
    print(path)


def cmd_data_prepare(args: argparse.Namespace) -> None:
    cfg = config_from_args(PrepareConfig, args, "data")
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


def cmd_score(args: argparse.Namespace) -> None:
    cfg = config_from_args(ScoreConfig, args, "score")
    from .scoring import score

    result = score(cfg, console)
    if not result["reused"]:
        console.print(
            f"scored {result['rows']} rows in {result['elapsed_s']:.1f}s, {result['rows_per_s']:.0f} rows/s; "
            f"added {', '.join(result['columns_added'])}"
        )
    for name, where in result["outputs"].items():
        console.print(f"  {name:12s} {where}")


def cmd_train(args: argparse.Namespace) -> None:
    extra: dict[str, Any] = {"stage": args.stage}
    if getattr(args, "deepspeed.zero_stage") is not None and getattr(args, "deepspeed.enabled") is None:
        extra["deepspeed.enabled"] = True  # --zero-stage N alone means DeepSpeed with ZeRO-N
    if getattr(args, "lora.rank") is not None and getattr(args, "lora.enabled") is None:
        extra["lora.enabled"] = True  # --lora-rank R alone means LoRA of rank R
    cfg = config_from_args(TrainConfig, args, args.stage, extra)
    from .train.ray_trainer import fit, fit_oracles

    results = fit_oracles(cfg, console) if cfg.stage == "oracle" else [fit(cfg, console)]
    for result in results:
        m = result["metrics"]
        console.print(
            f"{result['name']}: {m.get('global_step')} steps, loss {m.get('loss', float('nan')):.4f}, "
            f"{m.get('consumed_samples')} samples"
        )
        console.print(f"  model    {result['model']}\n  run      {result['train_dir']}")
        print(result["model"])


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    if args.config:
        raise UserError(
            "demo runs configs/demo-tiny-cpu.yaml (change it with --set); "
            "run another config with drdo-ray pipeline --config FILE"
        )
    run_demo(
        args.out,
        force=args.force,
        dry_run=args.dry_run,
        console=console,
        judge_base_url=args.judge_base_url,
        judge_model=args.judge_model,
        overrides=args.overrides,
    )


def cmd_pipeline(args: argparse.Namespace) -> None:
    if not args.config:
        raise UserError(
            "pipeline needs --config FILE or the name of a shipped config (drdo-ray configs lists them)"
        )
    cfg = load_config(PipelineConfig, config_file=args.config, section="pipeline", overrides=args.overrides)
    from .pipeline import run_pipeline

    stages = [s.strip() for s in (args.stages or "").split(",") if s.strip()]
    run_pipeline(cfg, stages=stages or None, force=args.force, dry_run=args.dry_run, console=console)
    print(cfg.run_dir)


def cmd_configs(args: argparse.Namespace) -> None:
    shipped = shipped_configs()
    if args.name:
        if args.name not in shipped:
            raise UserError(f"no shipped config {args.name!r}; choose one of {', '.join(shipped)}")
        print(shipped[args.name].read_text(), end="")
        return
    console.print(f"shipped configs in {configs_dir()} (use one with --config NAME):", soft_wrap=True)
    width = max(map(len, shipped), default=0) + 2
    for name, path in shipped.items():
        print(f"{name:{width}}{describe(path)}")


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """`demo`, `pipeline` and `configs`: every stage from one YAML config."""
    demo = sub.add_parser("demo", help="run the pipeline end to end on the shipped samples (CPU, offline)")
    add_common(demo)
    demo.add_argument("--out", default="demo_run", help="run directory (default: demo_run)")
    demo.add_argument("--force", action="store_true", help="rerun stages whose outputs exist")
    demo.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the plan, run nothing")
    demo.add_argument(
        "--judge-base-url",
        dest="judge_base_url",
        help="OpenAI-compatible judge endpoint (default: OpenAI, when OPENAI_API_KEY is set)",
    )
    demo.add_argument("--judge-model", dest="judge_model", help="judge model (default gpt-4o)")
    demo.set_defaults(func=cmd_demo)

    pipe = sub.add_parser(
        "pipeline", help="every stage of one experiment from one YAML config (local or cluster)"
    )
    add_common(pipe)
    pipe.add_argument(
        "--stages", help="comma-separated stages (prepare,sft,...) or step ids (align:drdo); default all"
    )
    pipe.add_argument(
        "--force", action="store_true", help="rerun the selected stages even if their outputs exist"
    )
    pipe.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the plan, run nothing")
    pipe.set_defaults(func=cmd_pipeline)

    listing = sub.add_parser("configs", help="list the shipped configs, or print one to copy and edit")
    listing.add_argument("name", nargs="?", help="a shipped config to print (YAML on stdout)")
    listing.set_defaults(func=cmd_configs)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`models tiny`, `data prepare` and `score`: what training reads."""
    models = sub.add_parser("models", help="build models").add_subparsers(
        dest="models_command", required=True
    )
    tiny = models.add_parser("tiny", help="write a tiny random-init causal LM + locally trained tokenizer")
    add_common(tiny)
    add_config_flags(tiny, TinyModelConfig)
    tiny.set_defaults(func=cmd_models_tiny)

    data = sub.add_parser("data", help="prepare datasets").add_subparsers(dest="data_command", required=True)
    prep = data.add_parser("prepare", help="normalize, tokenize, filter and split a source into Parquet")
    add_common(prep)
    add_config_flags(prep, PrepareConfig)
    prep.set_defaults(func=cmd_data_prepare)

    sc = sub.add_parser("score", help="precompute Oracle rewards / reference log-probs (Ray Data actor pool)")
    add_common(sc)
    add_config_flags(
        sc,
        ScoreConfig,
        custom={"oracles": {"flags": ["--oracle"], "action": "append", "type": str, "metavar": "MODEL"}},
    )
    sc.set_defaults(func=cmd_score)


def _add_train_commands(sub: argparse._SubParsersAction) -> None:
    """`train sft|oracle|align`: each stage offers the shared training flags and its own."""
    train = sub.add_parser("train", help="train on Ray Train (+ DeepSpeed): sft, oracle, align")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, text in (
        ("sft", "token-mean NLL on chosen responses / human summaries"),
        ("oracle", "the Oracle reward model (Eq. 4); --edpo-oracles K for e-DPO's K Oracles"),
        ("align", "align a policy with --loss (DRDO, its ablations or a baseline)"),
    ):
        p = stages.add_parser(stage, help=text)
        add_common(p)
        # Every TrainConfig field of this stage (TrainConfig.STAGE_FIELDS hides the others' fields).
        others = {f for name, fields in TrainConfig.STAGE_FIELDS.items() if name != stage for f in fields}
        add_config_flags(
            p,
            TrainConfig,
            exclude={"stage", *others},
            custom={
                "loss": {
                    "choices": ALIGN_LOSS_NAMES,
                    "metavar": "LOSS",
                    "type": str,
                    "help": "alignment loss: %(choices)s (docs: Concepts)",
                }
            },
        )
        add_config_flags(
            p,
            TrainConfig,
            ["deepspeed.enabled", "deepspeed.zero_stage"],
            custom={"deepspeed.enabled": {"flags": ["--deepspeed"]}},
        )
        lora = [
            "lora.enabled",
            "lora.rank",
            "lora.alpha",
            "lora.dropout",
            "lora.target_modules",
            "lora.export",
        ]
        add_config_flags(
            p,
            TrainConfig,
            lora,
            custom={
                path: {
                    "flags": [
                        "--lora"
                        if path == "lora.enabled"
                        else "--" + path.replace("_", "-").replace(".", "-")
                    ]
                }
                for path in lora
            },
        )
        p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drdo-ray", description="DRDO preference alignment on Ray: data, training, serving, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(sub)
    _add_data_commands(sub)
    _add_train_commands(sub)
    # Packages that own their commands register them here (serve, generate, eval, report, bench).
    from .bench.commands import register as register_bench
    from .eval.commands import register as register_eval
    from .generation.commands import register as register_generation
    from .serve.commands import register as register_serve

    for register in (register_serve, register_generation, register_eval, register_bench):
        register(sub)
    finish(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The `drdo-ray` script and `python -m drdo_ray.cli` alike: a tokenizer used before Ray or Ray
    # Data forks would otherwise warn in every child and turn its own threads off there anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
    sys.exit(main())
