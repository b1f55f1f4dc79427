"""`drdo-ray demo` / `make demo`: the pipeline on the shipped samples, offline, on the CPU.

Stages run in order; a stage whose outputs exist is skipped (``--force`` reruns it). The
training, generation and evaluation stages join this list as they land; today the demo
builds the tiny model and prepares every dataset the paper's pipeline needs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import storage
from .config import PrepareConfig

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

PENDING_STAGES = ("SFT", "Oracle", "score", "align", "generate", "evaluate", "report")


def _stage(console: Console, name: str, marker: Path, force: bool, run: Callable[[], None]) -> None:
    if marker.exists() and not force:
        console.print(f"[dim]skip[/]  {name} (outputs exist: {marker.parent})")
        return
    started = time.perf_counter()
    console.rule(f"[bold]{name}")
    run()
    console.print(f"[green]done[/]  {name} in {time.perf_counter() - started:.1f}s")


def run_demo(out: str, *, force: bool = False, console: Console | None = None) -> dict[str, dict]:
    """Run the demo into ``out``; returns the prepare stats per dataset."""
    from .data.prepare import prepare
    from .models import build_tiny_model

    console = console or Console(stderr=True)
    root = Path(out)
    model_dir = root / "models" / "tiny"
    _stage(console, "tiny tokenizer + model", model_dir / "config.json", force,
           lambda: build_tiny_model(model_dir, seed=0))

    stats: dict[str, dict] = {}
    for name, source, split, max_prompt in DEMO_DATASETS:
        target = root / "data" / name
        cfg = PrepareConfig(
            source=source, input="sample", out=str(target), tldr_split=split, tokenizer=str(model_dir),
            max_prompt_length=max_prompt, max_length=max(1024, max_prompt + 256),
        )
        _stage(console, f"prepare {name}", target / "stats.json", force, lambda cfg=cfg: prepare(cfg, console))
        stats[name] = storage.read_json(str(target / "stats.json"))

    table = Table(title=f"drdo-ray demo: datasets in {root / 'data'}")
    for column in ("dataset", "read", "written", "rejected", "mean conf", "mean dist"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, s in stats.items():
        split = s.get("tldr", {}).get("splits", {}).get(s.get("tldr", {}).get("split", ""), {})
        table.add_row(
            name, str(s["rows_read"]), str(s["rows_written"]), str(s["rows_rejected"]),
            f"{split['mean_confidence']:.2f}" if split.get("mean_confidence") is not None else "-",
            f"{split['mean_distance']:.3f}" if split.get("mean_distance") is not None else "-",
        )
    console.print(table)
    console.print(
        f"[yellow]Not yet in the demo:[/] {', '.join(PENDING_STAGES)} — these stages land with the "
        "training, generation and evaluation work; the demo runs what exists today."
    )
    console.print(f"model: {model_dir}")
    return stats
