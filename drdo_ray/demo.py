"""`drdo-ray demo` / `make demo`: the pipeline on the shipped samples, offline, on the CPU.

Stages run in order; a stage whose outputs exist is skipped (``--force`` reruns it): tiny
model -> every dataset -> SFT -> Oracle and a 3-member e-DPO ensemble -> score -> align with
DRDO, DPO and e-DPO -> sample each policy at four temperatures -> Oracle win rates -> report.
The judge runs only when a key or a judge endpoint is given."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import storage
from .config import (
    GenerateConfig,
    JudgeConfig,
    PrepareConfig,
    ReportConfig,
    ScoreConfig,
    TrainConfig,
    WinrateConfig,
)

DEMO_DATASETS = [
    # (name, source, TL;DR split, max prompt tokens)
    ("tldr_full", "tldr", "full", 512),
    ("tldr_easy", "tldr", "easy", 512),
    ("tldr_hard", "tldr", "hard", 512),
    ("tldr_sft", "tldr_sft", "full", 512),
    ("ultrafeedback", "ultrafeedback", "full", 512),
    # News articles run 160-390 words; the tiny 512-token BPE spends ~3 tokens a word on them.
    ("cnn_dailymail", "cnn_dailymail", "full", 1024),
    ("alpaca_eval", "alpaca_eval", "full", 512),
]

ENSEMBLE = 3  # e-DPO's Oracles (METHOD.md)
TEMPERATURES = [0.2, 0.5, 0.7, 0.9]

# Tiny-model training on 2 CPU workers: a few dozen steps per stage keep the demo in minutes.
DEMO_TRAIN = dict(
    num_workers=2,
    micro_batch_size=4,
    grad_accum=1,
    max_steps=24,
    checkpoint_every=12,
    warmup_steps=2,
    weight_decay=0.0,
)


def _stage(console: Console, name: str, marker: Path, force: bool, run: Callable[[], None]) -> None:
    if marker.exists() and not force:
        console.print(f"[dim]skip[/]  {name} (outputs exist: {marker.parent})")
        return
    started = time.perf_counter()
    console.rule(f"[bold]{name}")
    run()
    console.print(f"[green]done[/]  {name} in {time.perf_counter() - started:.1f}s")


def run_demo(
    out: str,
    *,
    force: bool = False,
    console: Console | None = None,
    train_steps: int = 24,
    eval_prompts: int = 16,
    max_new_tokens: int = 48,
    judge_base_url: str | None = None,
    judge_model: str = "gpt-4o",
) -> dict[str, dict]:
    """Run the demo into ``out``; returns the prepare stats per dataset. ``train_steps`` sets
    the optimizer steps of every training stage (tests use fewer)."""
    from .data.prepare import prepare
    from .models import build_tiny_model

    console = console or Console(stderr=True)
    root = Path(out)
    model_dir = root / "models" / "tiny"
    _stage(
        console,
        "tiny tokenizer + model",
        model_dir / "config.json",
        force,
        lambda: build_tiny_model(model_dir, seed=0),
    )

    stats: dict[str, dict] = {}
    for name, source, split, max_prompt in DEMO_DATASETS:
        target = root / "data" / name
        cfg = PrepareConfig(
            source=source,
            input="sample",
            out=str(target),
            tldr_split=split,
            tokenizer=str(model_dir),
            max_prompt_length=max_prompt,
            max_length=max(1024, max_prompt + 256),
        )
        _stage(
            console, f"prepare {name}", target / "stats.json", force, lambda cfg=cfg: prepare(cfg, console)
        )
        stats[name] = storage.read_json(str(target / "stats.json"))

    from .scoring import score
    from .train.ray_trainer import fit

    def train(name: str, **kw) -> Path:
        settings = DEMO_TRAIN | {"max_steps": train_steps, "checkpoint_every": max(1, train_steps // 2)} | kw
        cfg = TrainConfig(run_dir=str(root), name=name, **settings)
        model = root / "models" / name
        _stage(console, f"train {name}", model / "config.json", force, lambda: fit(cfg, console))
        return model

    data = root / "data"
    sft = train("sft", stage="sft", model=str(model_dir), data=str(data / "tldr_sft"), lr=2e-3)
    oracle = train(
        "oracle",
        stage="oracle",
        model=str(sft),
        data=str(data / "tldr_full"),
        lr=1e-3,
        deepspeed={"enabled": True, "zero_stage": 2},
    )
    # e-DPO: plain Bradley-Terry Oracles that differ only in the reward head's seed.
    members = [
        train(
            f"oracle-ens-{k}",
            stage="oracle",
            model=str(sft),
            data=str(data / "tldr_full"),
            lr=1e-3,
            ensemble=ENSEMBLE,
            head_seed=k,
        )
        for k in range(ENSEMBLE)
    ]
    scored = root / "scored" / "tldr_easy"
    score_cfg = ScoreConfig(
        data=str(data / "tldr_easy"),
        out=str(scored),
        oracles=[str(oracle)],
        reference=str(sft),
        reduction="sum",
        force=force,
    )
    _stage(console, "score tldr_easy", scored / "scoring.json", force, lambda: score(score_cfg, console))
    scored_ens = root / "scored" / "tldr_easy_ensemble"
    ens_cfg = ScoreConfig(
        data=str(data / "tldr_easy"),
        out=str(scored_ens),
        oracles=[str(m) for m in members],
        reference=str(sft),
        reduction="sum",
        force=force,
    )
    _stage(
        console,
        "score tldr_easy (e-DPO ensemble)",
        scored_ens / "scoring.json",
        force,
        lambda: score(ens_cfg, console),
    )
    for loss, source, extra in (
        ("drdo", scored, {"deepspeed": {"enabled": True, "zero_stage": 2}}),
        ("dpo", scored, {}),
        ("edpo", scored_ens, {}),
    ):
        train(f"align-{loss}", stage="align", loss=loss, model=str(sft), data=str(source), lr=5e-4, **extra)

    from .eval.report import build_report
    from .eval.sampling import generate_samples
    from .eval.winrate import run_winrate

    policies = ("sft", "align-drdo", "align-dpo", "align-edpo")
    for name in policies:
        gen = GenerateConfig(
            model=str(root / "models" / name),
            prompts=str(data / "tldr_sft"),
            out=str(root / "samples" / name),
            temperatures=TEMPERATURES,
            limit=eval_prompts,
            max_new_tokens=max_new_tokens,
            backend="transformers",
            force=force,
        )
        _stage(
            console,
            f"generate {name}",
            root / "samples" / name / "generation.json",
            force,
            lambda gen=gen: generate_samples(gen, console),
        )
    for opponent in ("align-dpo", "align-edpo", "sft", "reference"):
        target = root / "eval" / f"winrate-drdo-vs-{opponent}"
        wr = WinrateConfig(
            a=str(root / "samples" / "align-drdo"),
            b="reference" if opponent == "reference" else str(root / "samples" / opponent),
            oracle=str(oracle),
            out=str(target),
        )
        _stage(
            console,
            f"win rate DRDO vs {opponent}",
            target / "winrate.json",
            force,
            lambda wr=wr: run_winrate(wr, console),
        )
    _judge(console, root, force, judge_base_url, judge_model)
    report = build_report(ReportConfig(run=str(root), title="drdo-ray demo (tiny CPU run)"))

    table = Table(title=f"drdo-ray demo: datasets in {root / 'data'}")
    for column in ("dataset", "read", "written", "rejected", "mean conf", "mean dist"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, s in stats.items():
        split = s.get("tldr", {}).get("splits", {}).get(s.get("tldr", {}).get("split", ""), {})
        table.add_row(
            name,
            str(s["rows_read"]),
            str(s["rows_written"]),
            str(s["rows_rejected"]),
            f"{split['mean_confidence']:.2f}" if split.get("mean_confidence") is not None else "-",
            f"{split['mean_distance']:.3f}" if split.get("mean_distance") is not None else "-",
        )
    console.print(table)
    _print_training(console, root)
    console.print(_headline(Path(report["report"])), markup=False, soft_wrap=True)
    console.print(f"models: {root / 'models'}")
    console.print(f"[bold]report: {report['report']}[/]")
    return stats


def _judge(console: Console, root: Path, force: bool, base_url: str | None, model: str) -> None:
    """DRDO vs DPO by an LLM judge, only when one is reachable: OPENAI_API_KEY or a judge endpoint."""
    if not (base_url or os.environ.get("OPENAI_API_KEY")):
        console.print(
            "[yellow]judge skipped[/]: set OPENAI_API_KEY (GPT-4o) or pass --judge-base-url URL "
            "(any OpenAI-compatible server, e.g. `drdo-ray serve`) to add judge win rates"
        )
        return
    from .eval.judge import run_judge

    target = root / "eval" / "judge-drdo-vs-dpo"
    cfg = JudgeConfig(
        a=str(root / "samples" / "align-drdo"),
        b=str(root / "samples" / "align-dpo"),
        out=str(target),
        model=model,
        base_url=base_url,
        task="summarize",
        max_cost=5.0,
    )
    _stage(
        console, f"judge DRDO vs DPO ({model})", target / "judge.json", force, lambda: run_judge(cfg, console)
    )


def _headline(report: Path) -> str:
    """The report's headline table, as Markdown, for the terminal."""
    lines = report.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Headline"), None)
    if start is None:
        return ""
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        table.append(line)
    return "\n".join(table).strip()


def _print_training(console: Console, root: Path) -> None:
    table = Table(title=f"training runs in {root / 'train'}")
    for column in ("run", "steps", "first loss", "last loss", "reward acc", "samples"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for metrics in sorted((root / "train").glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        if not rows:
            continue
        acc = rows[-1].get("reward_accuracy")
        table.add_row(
            metrics.parent.name,
            str(rows[-1]["step"]),
            f"{rows[0]['loss']:.4f}",
            f"{rows[-1]['loss']:.4f}",
            f"{acc:.2f}" if acc is not None else "-",
            str(rows[-1].get("consumed_samples", "-")),
        )
    console.print(table)
