"""`drdo-ray bench online`: what ``overlap`` saves. The pipeline's offline stages (model, data,
SFT, the Oracle) run once into OUT/start; the online rounds then run from a copy of it twice, with
``overlap: false`` (the baseline) and ``overlap: true``, one after the other in the same process,
and the report gives the ratio of their wall times, each round's staleness and each method's
held-out win rate against SFT per round (docs/online.md).

    OUT/start/, OUT/overlap-false/, OUT/overlap-true/   the runs
    OUT/bench_online.json                                the report"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import storage
from ..config import load_config
from ..errors import UserError
from ..pipeline import run_pipeline
from ..pipeline_config import PIPELINE_STAGES, PipelineConfig
from ..run_layout import RunLayout
from .configs import BenchOnlineConfig

MODES = (False, True)  # the baseline first


def _pipeline(cfg: BenchOnlineConfig, run: Path, overlap: bool) -> PipelineConfig:
    items = [*cfg.pipeline_set, f"run_dir={run}", f"online.overlap={json.dumps(overlap)}"]
    pipeline = load_config(PipelineConfig, config_file=cfg.pipeline, section="pipeline", overrides=items)
    if pipeline.online is None:
        raise UserError(f"{cfg.pipeline} has no online section: nothing to measure")
    return pipeline


def _rounds(run: Path) -> dict[str, Any]:
    """Per round: each method's staleness and held-out win rate against SFT (round.json)."""
    layout = RunLayout(str(run))
    out: dict[str, Any] = {}
    k = 1
    while storage.exists(layout.round(k).round_record):
        record = storage.read_json(layout.round(k).round_record)
        out[str(k)] = {
            method: {
                "staleness": m["staleness"],
                "sampled_round": m["sampled_by"]["round"],
                "pairs": m["pairs"]["pairs"],
                "win_rate_vs_sft": (m["winrates"].get("sft") or {}).get("win_rate"),
            }
            for method, m in record["methods"].items()
        }
        k += 1
    return out


def bench_online(cfg: BenchOnlineConfig, console: Console) -> dict[str, Any]:
    out = Path(cfg.out).expanduser().resolve()
    start = out / "start"
    offline = [g for g in PIPELINE_STAGES if g not in ("online", "report")]
    console.rule("[bold]bench online[/]: the offline stages, once")
    run_pipeline(_pipeline(cfg, start, False), stages=offline, console=console)
    modes: dict[str, Any] = {}
    for overlap in MODES:
        run = out / f"overlap-{str(overlap).lower()}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(start, run, ignore=shutil.ignore_patterns("pipeline.json", "rounds"))
        console.rule(f"[bold]bench online[/]: the rounds with overlap {overlap}")
        started = time.perf_counter()
        result = run_pipeline(_pipeline(cfg, run, overlap), stages=["online"], console=console)
        wall = time.perf_counter() - started
        modes[f"overlap_{str(overlap).lower()}"] = {
            "wall_s": round(wall, 1),
            "steps_s": {k: v.get("elapsed_s") for k, v in result["stages"].items()},
            "rounds": _rounds(run),
        }
        console.print(f"  overlap {overlap}: {wall:.0f}s")
    pipeline = _pipeline(cfg, start, False)
    assert pipeline.online is not None
    ratio = modes["overlap_true"]["wall_s"] / modes["overlap_false"]["wall_s"]
    report = {
        "benchmark": "online_overlap",
        "command": " ".join(sys.argv),
        "device": f"cpu ({os.cpu_count()} core(s))",
        "pipeline": cfg.pipeline,
        "pipeline_set": cfg.pipeline_set,
        "online": pipeline.online.model_dump(mode="json", exclude={"serve"}),
        "order": [f"overlap_{str(o).lower()}" for o in MODES],
        "modes": modes,
        "wall_ratio_overlap_to_sequential": round(ratio, 3),
        "outputs": {"report": str(out / "bench_online.json")},
    }
    (out / "bench_online.json").write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"  overlap true / false wall time: {ratio:.3f}")
    return report
