"""`drdo-ray bench train`: the one training loop, called directly (no Ray), timed per method on
the same model and the same batches. Methods run interleaved, ``repeats`` times; each reports
the median step time after warmup and its ratio to DRDO measured in the same run.

Reference log-probs are precomputed with the starting model, as `drdo-ray score` would: random
values would make the DPO loss saturate and its backward pass crawl through denormal floats,
which is not what a real run sees."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .. import storage
from ..config import BenchTrainConfig, TrainConfig
from ..data.readers import sample_path
from ..data.sources import SOURCES
from ..data.tokenize import encode_prompt, encode_response
from ..models import pair_forward
from ..train.batches import Collator
from ..train.engine import World
from ..train.loop import run

ORACLE = ("oracle_chosen", "oracle_rejected")
REF = ("ref_chosen_logps", "ref_rejected_logps")


class _Quiet:
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        pass


def _columns(model: str, rows: int, pad_id: int) -> dict[str, np.ndarray]:
    """Tokenized Ultrafeedback sample pairs + Oracle rewards + reference log-probs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    lines = sample_path(SOURCES["ultrafeedback"]).read_text().splitlines()[:rows]
    records = [SOURCES["ultrafeedback"].normalize(json.loads(line), None) for line in lines]
    rng = np.random.default_rng(0)
    cols: dict[str, list[Any]] = {
        "prompt_ids": [encode_prompt(tok, r["prompt"], chat=True) for r in records],
        "chosen_ids": [encode_response(tok, r["chosen"]) for r in records],
        "rejected_ids": [encode_response(tok, r["rejected"]) for r in records],
        "oracle_chosen": list(rng.normal(0.5, 1.0, rows)), "oracle_rejected": list(rng.normal(-0.5, 1.0, rows)),
    }
    for k in range(3):
        cols[f"oracle_chosen_{k}"] = list(rng.normal(0.5, 1.0, rows))
        cols[f"oracle_rejected_{k}"] = list(rng.normal(-0.5, 1.0, rows))
    reference = AutoModelForCausalLM.from_pretrained(model).eval()
    collate = Collator(pad_id=pad_id, pairs=True)
    ref_c: list[float] = []
    ref_r: list[float] = []
    with torch.no_grad():
        for i in range(0, rows, 8):
            batch = collate({k: np.array(cols[k][i:i + 8], dtype=object) for k in ("prompt_ids", "chosen_ids",
                                                                                    "rejected_ids")})
            batch.pop("num_rows")
            out = pair_forward(reference, batch, reduction="sum")
            ref_c += out.chosen_logps.tolist()
            ref_r += out.rejected_logps.tolist()
    cols["ref_chosen_logps"], cols["ref_rejected_logps"] = ref_c, ref_r
    return {k: np.array(v, dtype=object) for k, v in cols.items()}


def _settings(method: str, model: str, cfg: BenchTrainConfig, steps: int) -> tuple[TrainConfig, tuple[str, ...], int]:
    common = dict(model=model, data="-", run_dir="-", micro_batch_size=cfg.pairs, num_workers=1, max_steps=steps,
                  checkpoint_every=10**9, lr=1e-5, warmup_steps=0)
    if method == "sft":
        return TrainConfig(stage="sft", **common), (), 0
    if method == "drdo":
        return TrainConfig(stage="align", loss="drdo", **common), ORACLE, 0
    if method == "dpo":
        return TrainConfig(stage="align", loss="dpo", **common), REF, 0
    if method == "dpo_live_ref":
        return TrainConfig(stage="align", loss="dpo", live_reference=model, **common), (), 0
    return TrainConfig(stage="align", loss="edpo", **common), REF + ORACLE, 3


def bench_train(cfg: BenchTrainConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    torch.set_num_threads(cfg.threads)
    model = cfg.model
    if model is None:
        from ..models import build_tiny_model

        model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="drdo-bench-")) / "tiny", seed=0))
    from transformers import AutoTokenizer

    pad_id = AutoTokenizer.from_pretrained(model).pad_token_id
    steps = cfg.warmup + cfg.steps
    columns = _columns(model, cfg.pairs * steps, pad_id)
    times: dict[str, list[float]] = {m: [] for m in cfg.methods}
    tokens: dict[str, float] = {}
    peak: dict[str, float | None] = {}
    for rep in range(cfg.repeats):
        for method in cfg.methods:
            train_cfg, extra, ensemble = _settings(method, model, cfg, steps)
            collate = Collator(pad_id=pad_id, pairs=method != "sft", extra=extra, ensemble=ensemble)
            feed = [collate({k: v[i:i + cfg.pairs] for k, v in columns.items()})
                    for i in range(0, cfg.pairs * steps, cfg.pairs)]
            tokens[method] = statistics.mean(float(b["attention_mask"].sum()) for b in feed)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            metrics_dir = Path(tempfile.mkdtemp(prefix="drdo-bench-"))
            started = time.perf_counter()
            run(train_cfg, batches=lambda _e, feed=feed: feed, num_rows=cfg.pairs * steps, world=World(),
                reporter=_Quiet(), metrics_dir=metrics_dir)
            step_s = [json.loads(line)["step_s"] for line in (metrics_dir / "metrics.jsonl").read_text().splitlines()]
            times[method].append(statistics.median(step_s[cfg.warmup:]))
            peak[method] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
            console.print(f"rep {rep + 1}/{cfg.repeats} {method:13s} {times[method][-1] * 1000:8.1f} ms/step "
                          f"({time.perf_counter() - started:.1f}s)")
    base = statistics.median(times["drdo"]) if "drdo" in times else None
    results = {}
    for method, values in times.items():
        step = statistics.median(values)
        results[method] = {
            "step_s": step, "step_s_reps": values, "tokens_per_s": tokens[method] / step,
            "peak_mem_gb": peak[method], "ratio_to_drdo": step / base if base else None,
        }
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({cfg.threads} thread(s))",
        "model": model, "pairs_per_step": cfg.pairs, "timed_steps": cfg.steps, "warmup": cfg.warmup,
        "repeats": cfg.repeats, "methods": results,
        "note": "peak_mem_gb is measured on GPU only; dpo reads reference log-probs precomputed like `score`",
    }
    storage.makedirs(cfg.out)
    storage.write_json(storage.join(cfg.out, "bench_train.json"), report)
    table = Table(title=f"bench train: {report['device']}, {cfg.pairs} pairs/step, median of {cfg.steps} steps")
    for column in ("method", "ms/step", "tokens/s", "ratio to drdo"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, r in results.items():
        table.add_row(method, f"{r['step_s'] * 1000:.1f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['ratio_to_drdo']:.2f}" if r["ratio_to_drdo"] else "-")
    console.print(table)
    report["outputs"] = {"report": storage.join(cfg.out, "bench_train.json")}
    return report
