"""`drdo-ray demo` / `make demo`: the pipeline of ``configs/demo-tiny-cpu.yaml`` (run by
:func:`drdo_ray.pipeline.run_pipeline`, the code path of `drdo-ray pipeline`) into one local run
directory, then a summary: the datasets, the training runs and the report's headline.

The stages: tiny model -> every dataset -> SFT -> Oracle and 3 e-DPO Oracles -> score
-> align with DRDO, DPO and e-DPO -> sample each policy at four temperatures -> Oracle win rates
-> judge (only when a key or a judge endpoint is given) -> report. A stage whose outputs exist
is skipped (``--force`` reruns it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import storage
from .config import load_config
from .errors import UserError
from .pipeline_config import PipelineConfig
from .run_layout import METRICS_FILE, REPORT_FILE, RunLayout
from .shipped_configs import configs_dir

DEMO_CONFIG = configs_dir() / "demo-tiny-cpu.yaml"


def demo_config(
    out: str,
    *,
    train_steps: int | None = None,
    eval_prompts: int | None = None,
    max_new_tokens: int | None = None,
    judge_base_url: str | None = None,
    judge_model: str | None = None,
    overrides: Sequence[str] = (),
) -> PipelineConfig:
    """The demo's pipeline config: ``configs/demo-tiny-cpu.yaml`` with ``run_dir=out``; the
    keyword arguments shrink it (tests) or point its judge somewhere, ``overrides`` are --set
    items applied last."""
    if not DEMO_CONFIG.is_file():
        raise UserError(f"{DEMO_CONFIG} is missing: reinstall drdo-ray (its wheel ships the configs)")
    if not storage.is_local(out):
        raise UserError(f"--out {out}: the demo runs into a local folder (use drdo-ray pipeline for s3://)")
    settings: dict[str, Any] = {"run_dir": out}
    if train_steps is not None:
        settings |= {"train.max_steps": train_steps, "train.checkpoint_every": max(1, train_steps // 2)}
    if eval_prompts is not None:
        settings["generate.limit"] = eval_prompts
    if max_new_tokens is not None:
        settings["generate.max_new_tokens"] = max_new_tokens
    if judge_base_url is not None:
        settings["judge.base_url"] = judge_base_url
    if judge_model is not None:
        settings["judge.model"] = judge_model
    items = [f"{key}={json.dumps(value)}" for key, value in settings.items()] + list(overrides)
    return load_config(PipelineConfig, config_file=str(DEMO_CONFIG), section="pipeline", overrides=items)


def run_demo(
    out: str,
    *,
    force: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the demo pipeline into ``out`` and print its summary; returns the pipeline's result
    plus ``datasets`` (each prepared dataset's stats.json). ``options``: :func:`demo_config`'s."""
    from .pipeline import run_pipeline

    console = console or Console(stderr=True)
    cfg = demo_config(out, **options)
    result = run_pipeline(cfg, force=force, dry_run=dry_run, console=console)
    if dry_run:
        return result
    layout = RunLayout(cfg.run_dir)
    stats = {
        path.parent.name: json.loads(path.read_text())
        for path in sorted(Path(layout.data_root).glob("*/stats.json"))
    }
    _print_datasets(console, layout, stats)
    _print_training(console, layout)
    report = Path(layout.report) / REPORT_FILE
    console.print(_headline(report), markup=False, soft_wrap=True)
    # Paths stay on one line (copied from the terminal).
    console.print(f"models: {layout.models_root}", soft_wrap=True)
    console.print(f"[bold]report: {report}[/]", soft_wrap=True)
    return {**result, "datasets": stats}


def _print_datasets(console: Console, layout: RunLayout, stats: dict[str, dict[str, Any]]) -> None:
    table = Table(title=f"drdo-ray demo: datasets in {layout.data_root}")
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


def _print_training(console: Console, layout: RunLayout) -> None:
    table = Table(title=f"training runs in {layout.train_root}")
    for column in ("run", "steps", "first loss", "last loss", "reward acc", "samples"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for metrics in sorted(Path(layout.train_root).glob(f"*/{METRICS_FILE}")):
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
