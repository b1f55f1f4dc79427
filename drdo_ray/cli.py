"""The `drdo-ray` command. Each subcommand takes --config FILE and --set key=value, validates
into a typed config (config.py), runs, and prints where it wrote its outputs. Errors the user
can fix are one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console

from .config import SOURCE_NAMES, PrepareConfig, TinyModelConfig, load_config
from .errors import UserError

console = Console(stderr=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with this stage's settings")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable; dotted keys for nested settings)",
    )


def _flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def cmd_models_tiny(args: argparse.Namespace) -> None:
    cfg = load_config(
        TinyModelConfig,
        config_file=args.config,
        section="tiny_model",
        flags=_flags(args, ["out", "seed", "arch", "hidden_size", "num_layers", "vocab_size"]),
        overrides=args.overrides,
    )
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
    cfg = load_config(
        PrepareConfig,
        config_file=args.config,
        section="data",
        flags=_flags(
            args,
            [
                "source",
                "input",
                "out",
                "hub_split",
                "tldr_split",
                "tokenizer",
                "max_prompt_length",
                "max_length",
            ],
        ),
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


def cmd_score(args: argparse.Namespace) -> None:
    from .config import ScoreConfig

    cfg = load_config(
        ScoreConfig,
        config_file=args.config,
        section="score",
        flags=_flags(
            args, ["data", "oracles", "reference", "reduction", "batch_size", "num_actors", "out", "force"]
        ),
        overrides=args.overrides,
    )
    from .scoring import score

    result = score(cfg, console)
    if not result["reused"]:
        console.print(
            f"scored {result['rows']} rows in {result['elapsed_s']:.1f}s, {result['rows_per_s']:.0f} rows/s; "
            f"added {', '.join(result['columns_added'])}"
        )
    for name, where in result["outputs"].items():
        console.print(f"  {name:12s} {where}")


TRAIN_FLAGS = [
    "loss",
    "model",
    "data",
    "run_dir",
    "name",
    "num_workers",
    "micro_batch_size",
    "grad_accum",
    "max_steps",
    "epochs",
    "lr",
    "use_gpu",
    "ensemble",
    "live_reference",
    "checkpoint_every",
    "max_failures",
    "reduction",
    "distill_weight",
    "distill_trunk",
    "term_grads",
]


class _AlignLosses:
    """``--loss`` choices read from the loss registry (``drdo_ray.losses.ALIGN_LOSSES``) only when
    argparse checks a value or prints help: the losses import torch, which the other commands
    and ``--help`` need not wait for."""

    def _names(self) -> tuple[str, ...]:
        from .losses import ALIGN_LOSSES

        return ALIGN_LOSSES

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def cmd_train(args: argparse.Namespace) -> None:
    from .config import TrainConfig

    flags = _flags(args, TRAIN_FLAGS) | {"stage": args.stage}
    if args.deepspeed is not None or args.zero_stage is not None:
        flags["deepspeed"] = {"enabled": args.deepspeed if args.deepspeed is not None else True}
        if args.zero_stage is not None:
            flags["deepspeed"]["zero_stage"] = args.zero_stage
    cfg = load_config(
        TrainConfig, config_file=args.config, section=args.stage, flags=flags, overrides=args.overrides
    )
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
    from .config import PipelineConfig

    if not args.config:
        raise UserError(
            "pipeline needs --config FILE (a `pipeline:` section; see configs/*-ultrafeedback.yaml)"
        )
    cfg = load_config(PipelineConfig, config_file=args.config, section="pipeline", overrides=args.overrides)
    from .pipeline import run_pipeline

    stages = [s.strip() for s in (args.stages or "").split(",") if s.strip()]
    run_pipeline(cfg, stages=stages or None, force=args.force, dry_run=args.dry_run, console=console)
    print(cfg.run_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drdo-ray", description="DRDO preference alignment on Ray: data, training, serving, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the pipeline end to end on the shipped samples (CPU, offline)")
    _common(demo)
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
    _common(pipe)
    pipe.add_argument(
        "--stages", help="comma-separated stages (prepare,sft,...) or step ids (align:drdo); default all"
    )
    pipe.add_argument(
        "--force", action="store_true", help="rerun the selected stages even if their outputs exist"
    )
    pipe.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the plan, run nothing")
    pipe.set_defaults(func=cmd_pipeline)

    models = sub.add_parser("models", help="build models").add_subparsers(
        dest="models_command", required=True
    )
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

    sc = sub.add_parser("score", help="precompute Oracle rewards / reference log-probs (Ray Data actor pool)")
    _common(sc)
    sc.add_argument("--data", help="prepared dataset folder (tokenized: data prepare --tokenizer)")
    sc.add_argument(
        "--oracle",
        dest="oracles",
        action="append",
        default=None,
        metavar="MODEL",
        help="Oracle folder or hub id (repeat for an e-DPO ensemble)",
    )
    sc.add_argument("--reference", help="reference (SFT) model for ref_chosen_logps / ref_rejected_logps")
    sc.add_argument(
        "--reduction", choices=["sum", "mean"], help="reference log-prob reduction (default: sum)"
    )
    sc.add_argument("--batch-size", dest="batch_size", type=int, help="pairs per forward pass")
    sc.add_argument(
        "--num-actors", dest="num_actors", type=int, help="scoring actors (one GPU each where CUDA exists)"
    )
    sc.add_argument("--out", help="output folder: data/, scoring.json, source_stats.json")
    sc.add_argument("--force", action="store_true", default=None, help="rescore even if OUT holds a scoring")
    sc.set_defaults(func=cmd_score)

    train = sub.add_parser("train", help="train on Ray Train (+ DeepSpeed): sft, oracle, align")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, text in (
        ("sft", "token-mean NLL on chosen responses / human summaries"),
        ("oracle", "the Oracle reward model (Eq. 4); --ensemble K for e-DPO"),
        ("align", "align a policy with --loss (DRDO, its ablations or a baseline)"),
    ):
        p = stages.add_parser(stage, help=text)
        _common(p)
        p.add_argument("--model", help="model folder or hub id to start from")
        p.add_argument("--data", help="prepared dataset (sft, oracle) or scored dataset (align)")
        p.add_argument("--run-dir", dest="run_dir", help="run directory (local or s3://)")
        p.add_argument("--name", help="run name (a rerun with the same name resumes)")
        p.add_argument("--num-workers", dest="num_workers", type=int)
        p.add_argument("--micro-batch-size", dest="micro_batch_size", type=int)
        p.add_argument("--grad-accum", dest="grad_accum", type=int)
        p.add_argument("--max-steps", dest="max_steps", type=int)
        p.add_argument("--epochs", type=int)
        p.add_argument("--lr", type=float)
        p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
        p.add_argument("--max-failures", dest="max_failures", type=int)
        p.add_argument("--use-gpu", dest="use_gpu", action="store_true", default=None)
        p.add_argument("--deepspeed", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument("--zero-stage", dest="zero_stage", type=int, choices=[0, 1, 2, 3])
        p.add_argument(
            "--loss",
            choices=_AlignLosses() if stage == "align" else None,
            metavar="LOSS",  # argparse would list (import) the choices while building the parser
            help=argparse.SUPPRESS if stage != "align" else "alignment loss: %(choices)s (README: Train)",
        )
        p.add_argument(
            "--distill-weight",
            dest="distill_weight",
            type=float,
            help=argparse.SUPPRESS
            if stage != "align"
            else "DRDO: λ on the distillation term (default 1.0, the paper's Eq. 5)",
        )
        p.add_argument(
            "--distill-trunk",
            dest="distill_trunk",
            metavar="full|detach|scaled:F",
            help=argparse.SUPPRESS
            if stage != "align"
            else "DRDO: the distillation term's gradient into the LM trunk: full (default, the paper), "
            "detach (it trains the reward head only) or scaled:F (times F)",
        )
        p.add_argument(
            "--term-grads",
            dest="term_grads",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=argparse.SUPPRESS
            if stage != "align"
            else "DRDO family: log each term's gradient on the trunk output at logged steps (default on)",
        )
        p.add_argument(
            "--reduction",
            choices=["mean", "sum"],
            help=argparse.SUPPRESS
            if stage != "align"
            else "sequence log-prob reduction (default: mean for DRDO, sum for DPO)",
        )
        p.add_argument(
            "--ensemble",
            type=int,
            help=argparse.SUPPRESS
            if stage != "oracle"
            else "train K Oracles with head seeds 0..K-1 (plain Bradley-Terry)",
        )
        p.add_argument(
            "--live-reference",
            dest="live_reference",
            help=argparse.SUPPRESS
            if stage != "align"
            else "DPO family: hold this reference model live instead of precomputed columns",
        )
        p.set_defaults(func=cmd_train)
    # Packages that own their commands register them here (serve, generate, eval, report, bench).
    from .bench.commands import register as register_bench
    from .eval.commands import register as register_eval
    from .serve.commands import register as register_serve

    for register in (register_serve, register_eval, register_bench):
        register(sub, _common)
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
