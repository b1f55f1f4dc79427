"""`drdo-ray bench train`: the one training loop, called directly (no Ray), timed per method on
the same model and the same batches. Variants run interleaved, ``repeats`` times; each reports
the median step time after warmup, tokens/s, peak memory (and MFU on a GPU), with ratios to
DRDO measured in the same run. Optional: DeepSpeed next to the plain torch engine, chunked
vocabulary log-probs, DRDO under Ray Train with one worker (the Ray overhead) and TRL's
DPOTrainer on the same rows (a peer anchor, when `trl` is installed).

SFT is fed the pair batches' sequences (chosen and rejected rows as separate examples), so its
tokens/s is measured over exactly DRDO's tokens."""

from __future__ import annotations

import gc
import importlib.util
import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .. import storage
from ..config import TrainConfig
from ..train.batches import Collator
from ..train.diagnostics import TERM_GRAD_KEYS
from ..train.engine import World
from ..train.loop import run
from . import train_inputs as inputs
from .configs import BenchTrainConfig

ORACLE = ("oracle_chosen", "oracle_rejected")
REF = ("ref_chosen_logps", "ref_rejected_logps")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    engine: str  # "torch" | "deepspeed"
    chunk: int | None = None
    term_grads: str | None = None  # DRDO's per-term gradient diagnostics on every step: where taken
    lora: int | None = None  # LoRA rank: adapters train instead of every weight


def _return_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim), so a run's RSS growth is
    its own allocations and not zero because an earlier run left the pages behind."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class PeakMemory:
    """Peak memory growth during a run. GPU: max allocated bytes; CPU: the process's RSS,
    sampled every 5 ms."""

    def __enter__(self) -> PeakMemory:
        self.gb: float | None = None
        gc.collect()  # engines of earlier variants (DeepSpeed keeps references) must not count here
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        import psutil

        _return_free_heap()
        self._proc, self._stop = psutil.Process(), threading.Event()
        self._start = self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_available():
            self.gb = (torch.cuda.max_memory_allocated() - self._start) / 2**30
        else:
            self._stop.set()
            self._thread.join()
            self.gb = (self._peak - self._start) / 2**30


def _variants(cfg: BenchTrainConfig) -> list[Variant]:
    out = []
    for engine in cfg.engines:
        suffix = (
            ""
            if engine == cfg.engines[0]
            else f"+{engine}" + (f"-zero{cfg.zero_stage}" if engine == "deepspeed" else "")
        )
        out += [Variant(m + suffix, m, engine) for m in cfg.methods]
    out += [Variant(f"drdo+chunk{c}", "drdo", cfg.engines[0], c) for c in cfg.logps_chunk_sizes]
    out += [
        Variant(f"drdo+term_grads_{wrt}", "drdo", cfg.engines[0], term_grads=wrt) for wrt in cfg.term_grads
    ]
    if _installed("peft"):
        out += [Variant(f"drdo+lora{r}", "drdo", cfg.engines[0], lora=r) for r in cfg.lora_ranks]
    return out


def _train_config(
    v: Variant, model: str, cfg: BenchTrainConfig, steps: int
) -> tuple[TrainConfig, tuple, int]:
    sft = v.method == "sft"
    common = dict(
        model=model,
        data="-",
        run_dir="-",
        micro_batch_size=cfg.pairs * (2 if sft else 1),
        num_workers=1,
        max_steps=steps,
        checkpoint_every=0,
        lr=1e-5,
        warmup_steps=0,
        use_gpu=torch.cuda.is_available(),
        bf16=cfg.bf16,
        logps_chunk_size=v.chunk,
        deepspeed={"enabled": v.engine == "deepspeed", "zero_stage": cfg.zero_stage},
        lora={"enabled": v.lora is not None, "rank": v.lora or 16, "alpha": 2 * (v.lora or 16)},
        log_every=1,
    )
    if sft:
        return TrainConfig(stage="sft", **common), (), 0
    if v.method == "drdo":
        # Rows without diagnostics time the step alone; the drdo+term_grads_* rows time the
        # diagnostics as training runs them by default (every logged step, log_every 1).
        diagnostics = {"term_grads": v.term_grads is not None, "term_grads_wrt": v.term_grads or "hidden"}
        return TrainConfig(stage="align", loss="drdo", **common, **diagnostics), ORACLE, 0
    if v.method == "dpo":
        return TrainConfig(stage="align", loss="dpo", **common), REF, 0
    if v.method == "dpo_live_ref":
        return TrainConfig(stage="align", loss="dpo", live_reference=model, **common), (), 0
    return TrainConfig(stage="align", loss="edpo", **common), REF + ORACLE, 3


def _sft_view(cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Pair rows as SFT rows: per pair, prompt + chosen then prompt + rejected."""
    return {
        "prompt_ids": [p for p in cols["prompt_ids"] for _ in (0, 1)],
        "chosen_ids": [
            r for pair in zip(cols["chosen_ids"], cols["rejected_ids"], strict=True) for r in pair
        ],
    }


def _feed(cols: dict[str, list[Any]], collate: Collator, batch: int) -> Iterator[dict[str, torch.Tensor]]:
    """Collated on the fly, as Ray Data's iter_torch_batches does, so both paths pay for it."""
    arrays = {k: np.array(v, dtype=object) for k, v in cols.items() if k != "text"}
    rows = len(cols["prompt_ids"])
    for i in range(0, rows - batch + 1, batch):
        yield collate({k: v[i : i + batch] for k, v in arrays.items()})


def _lengths(cols: dict[str, list[Any]], rows: int) -> list[int]:
    return [
        len(cols["prompt_ids"][i]) + len(cols[side][i])
        for i in range(rows)
        for side in ("chosen_ids", "rejected_ids")
    ]


def train_state_gb(model: torch.nn.Module, engine: Any) -> float:
    """GB the trained model holds between steps, read from the model and the engine's optimizer:
    every parameter, one gradient per trainable parameter (what backward allocates) and the
    optimizer's state tensors (DeepSpeed: those of the torch optimizer it wraps)."""
    params = list(model.parameters())
    total = sum(p.numel() * p.element_size() for p in params)
    total += sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    optimizer = getattr(engine.optimizer, "optimizer", engine.optimizer)
    total += sum(
        t.numel() * t.element_size()
        for entry in optimizer.state.values()
        for t in entry.values()
        if isinstance(t, torch.Tensor)
    )
    return total / 2**30


def _init_single_process_group() -> None:
    """DeepSpeed wants a process group even for one process (Ray Train sets one up for workers)."""
    import os

    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # present in sys.modules without a spec (stubbed out)
        return False


def _logged(metrics_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (metrics_dir / "metrics.jsonl").read_text().splitlines() if line]


@dataclass
class Inputs:
    """What every timed row of one run shares: the model, its rows and the step's size."""

    model: str
    pad_id: int
    cols: dict[str, Any]
    rows: int
    steps: int
    tokens_per_step: float
    dims: dict[str, int]
    device: str
    peak: float | None


@dataclass
class Timings:
    """Median step seconds per repetition of every row, peak memory, the training state and the
    diagnostics flag."""

    times: dict[str, list[float]] = field(default_factory=dict)
    mem: dict[str, list[float]] = field(default_factory=dict)  # per repetition
    state: dict[str, float] = field(default_factory=dict)
    diagnosed: dict[str, bool] = field(default_factory=dict)
    ray: list[float] = field(default_factory=list)
    trl: dict[str, list[float]] = field(default_factory=dict)


def _inputs(cfg: BenchTrainConfig, variants: list[Variant], console: Console) -> Inputs:
    """The model (given, of a shape, or the tiny one), the rows with their scores and reference
    log-probs, and the figures MFU needs."""
    cuda = torch.cuda.is_available()
    model = cfg.model
    if model is None and cfg.shape:
        console.print(f"building a random-init {cfg.shape} ...")
        model = inputs.build_shaped_model(cfg.shape, inputs.temp_dir("shape") / cfg.shape)
    elif model is None:
        from ..models import build_tiny_model

        model = str(build_tiny_model(inputs.temp_dir("tiny") / "tiny", seed=0))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    pad_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    steps = cfg.warmup + cfg.steps
    rows = cfg.pairs * steps
    if cfg.seq_len:
        cols = inputs.synthetic_columns(config.get_text_config().vocab_size, rows, cfg.seq_len)
    else:
        cols = inputs.sample_columns(model, rows)
    inputs.add_scores(cols, rows)
    if any(v.method in ("dpo", "edpo") for v in variants):
        inputs.add_reference_logps(cols, model, pad_id, cfg.pairs, max(cfg.logps_chunk_sizes, default=None))
    device = torch.cuda.get_device_name() if cuda else f"cpu ({cfg.threads} thread(s))"
    lengths = _lengths(cols, rows)
    tokens_per_step = statistics.mean(
        sum(lengths[i : i + 2 * cfg.pairs]) for i in range(0, 2 * rows, 2 * cfg.pairs)
    )
    return Inputs(
        model=model,
        pad_id=pad_id,
        cols=cols,
        rows=rows,
        steps=steps,
        tokens_per_step=tokens_per_step,
        dims=inputs.model_dims(model),
        device=device,
        peak=inputs.device_peak(device, cfg.peak_tflops) if cuda else None,
    )


def _time_variant(cfg: BenchTrainConfig, v: Variant, data: Inputs, out: Timings) -> float:
    """One repetition of one row through the loop; returns its wall seconds."""
    train_cfg, extra, edpo_oracles = _train_config(v, data.model, cfg, data.steps)
    sft = v.method == "sft"
    collate = Collator(pad_id=data.pad_id, pairs=not sft, extra=extra, edpo_oracles=edpo_oracles)
    source = _sft_view(data.cols) if sft else data.cols
    metrics_dir = inputs.temp_dir("metrics")
    started = time.perf_counter()
    with PeakMemory() as peak_mem:
        run(
            train_cfg,
            batches=lambda _e, s=source, c=collate, b=train_cfg.micro_batch_size: _feed(s, c, b),
            num_rows=data.rows * (2 if sft else 1),
            world=World(),
            metrics_dir=metrics_dir,
            export=lambda model, engine: out.state.update({v.name: train_state_gb(model, engine)}),
        )
    logged = _logged(metrics_dir)
    out.times.setdefault(v.name, []).append(statistics.median(r["step_s"] for r in logged[cfg.warmup :]))
    # Whether every step logged the diagnostics: what the term_grads rows pay for.
    out.diagnosed[v.name] = all(set(TERM_GRAD_KEYS) <= r.keys() for r in logged)
    out.mem.setdefault(v.name, []).append(peak_mem.gb or 0.0)
    return time.perf_counter() - started


def _time_anchors(cfg: BenchTrainConfig, data: Inputs, out: Timings, rep: int, console: Console) -> None:
    """One repetition of the anchors: DRDO under Ray Train (1 worker), and TRL's DPOTrainer."""
    if cfg.ray_overhead and _installed("ray") and "drdo" in out.times:
        from .ray_overhead import drdo_under_ray_train

        train_cfg, extra, _ = _train_config(
            Variant("drdo", "drdo", cfg.engines[0]), data.model, cfg, data.steps
        )
        step_times = drdo_under_ray_train(train_cfg, data.cols, data.pad_id, extra, cfg.threads)
        out.ray.append(statistics.median(step_times[cfg.warmup :]))
        console.print(
            f"rep {rep + 1}/{cfg.repeats} {'drdo under Ray Train':22s} {out.ray[-1] * 1000:9.1f} ms/step"
        )
    if cfg.trl and _installed("trl") and "text" in data.cols:
        from .trl_anchor import trl_dpo_step_times

        for precompute in (False, True):
            name = "trl_dpo_precomputed_ref" if precompute else "trl_dpo_live_ref"
            step_times = trl_dpo_step_times(
                data.model, data.cols["text"], cfg, data.steps, precompute=precompute
            )
            out.trl.setdefault(name, []).append(statistics.median(step_times[cfg.warmup :]))
            console.print(f"rep {rep + 1}/{cfg.repeats} {name:22s} {out.trl[name][-1] * 1000:9.1f} ms/step")


def bench_train(cfg: BenchTrainConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    torch.set_num_threads(cfg.threads)
    variants = _variants(cfg)
    data = _inputs(cfg, variants, console)
    if any(v.engine == "deepspeed" for v in variants):
        _init_single_process_group()
    timings = Timings()
    for rep in range(cfg.repeats):  # interleaved: every row sees the same machine state
        for v in variants:
            wall = _time_variant(cfg, v, data, timings)
            console.print(
                f"rep {rep + 1}/{cfg.repeats} {v.name:24s} {timings.times[v.name][-1] * 1000:9.1f} ms/step "
                f"peak {timings.mem[v.name][-1]:.2f} GB ({wall:.1f}s)"
            )
        _time_anchors(cfg, data, timings, rep, console)
    report = _summarize(cfg, variants, data, timings)
    storage.makedirs(cfg.out)
    storage.write_json(storage.join(cfg.out, "bench_train.json"), report)
    _print(console, report)
    report["outputs"] = {"report": storage.join(cfg.out, "bench_train.json")}
    return report


def _peak_memory(t: Timings) -> dict[str, float]:
    """Each row's peak memory: the median over repetitions. On CPU the first row of the first one
    also pays one-time allocations, which a maximum would charge to that row alone."""
    return {name: statistics.median(values) for name, values in t.mem.items()}


def _method_rows(cfg: BenchTrainConfig, variants: list[Variant], data: Inputs, t: Timings) -> dict[str, Any]:
    """Per row: median step time, tokens/s, peak memory, the ratio to DRDO's step and MFU."""
    med = {name: statistics.median(values) for name, values in t.times.items()}
    mem = _peak_memory(t)
    base = med.get("drdo")
    avg_len = data.tokens_per_step / (2 * cfg.pairs)
    methods: dict[str, Any] = {}
    for v in variants:
        step = med[v.name]
        flops = inputs.step_flops(
            [round(avg_len)] * 2 * cfg.pairs,
            data.dims,
            forward_only_passes=1 if v.method == "dpo_live_ref" else 0,
        )
        methods[v.name] = {
            "method": v.method,
            "engine": v.engine,
            "logps_chunk_size": v.chunk,
            "term_grads_wrt": v.term_grads,
            "term_grads_logged": t.diagnosed[v.name],
            "lora_rank": v.lora,
            "step_s": step,
            "step_s_reps": t.times[v.name],
            "tokens_per_s": data.tokens_per_step / step,
            "peak_mem_gb": mem[v.name],
            "peak_mem_gb_reps": t.mem[v.name],
            "train_state_gb": t.state.get(v.name),
            "ratio_to_drdo": step / base if base else None,
            "mfu": flops / step / data.peak if data.peak else None,
        }
    for name, values in t.trl.items():
        step = statistics.median(values)
        methods[name] = {
            "method": name,
            "engine": "trl",
            "step_s": step,
            "step_s_reps": values,
            "tokens_per_s": None,
            "peak_mem_gb": None,
            "ratio_to_drdo": step / base if base else None,
            "mfu": None,
        }
    return methods


def _summarize(cfg: BenchTrainConfig, variants: list[Variant], data: Inputs, t: Timings) -> dict[str, Any]:
    med = {name: statistics.median(values) for name, values in t.times.items()}
    base = med.get("drdo")
    lora = next((v.name for v in variants if v.lora is not None), None)
    mem, state = _peak_memory(t), t.state
    ratios: dict[str, float | None] = {
        "drdo_over_dpo_live_ref": base / med["dpo_live_ref"] if base and "dpo_live_ref" in med else None,
        # LoRA against full fine-tuning, both DRDO on the same engine and batches, same run.
        "drdo_lora_step_over_full": med[lora] / base if base and lora else None,
        "drdo_lora_peak_mem_over_full": (
            mem[lora] / mem["drdo"] if lora and mem.get(lora) is not None and mem.get("drdo") else None
        ),
        "drdo_lora_train_state_over_full": (
            state[lora] / state["drdo"] if lora and lora in state and state.get("drdo") else None
        ),
        "drdo_tokens_per_s_over_sft": med["sft"] / base if base and "sft" in med else None,
        "drdo_over_trl_dpo_live_ref": (
            base / statistics.median(t.trl["trl_dpo_live_ref"])
            if base and "trl_dpo_live_ref" in t.trl
            else None
        ),
    }
    return {
        "device": data.device,
        "model": data.model,
        "shape": cfg.shape,
        "seq_len": cfg.seq_len,
        "pairs_per_step": cfg.pairs,
        "tokens_per_step": data.tokens_per_step,
        "timed_steps": cfg.steps,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "matmul_params": data.dims["matmul_params"],
        "peak_flops": data.peak,
        "methods": _method_rows(cfg, variants, data, t),
        "ray_overhead_ratio": statistics.median(t.ray) / base if t.ray and base else None,
        "ray_step_s_reps": t.ray,
        "ratios": ratios,
        "targets": {
            "drdo_over_dpo_live_ref": 0.80,
            "ray_overhead_ratio": 1.05,
            "drdo_tokens_per_s_over_sft": 0.95,
            "drdo_over_trl_dpo_live_ref": 0.55,
        },
        "note": (
            "peak_mem_gb: the median over repetitions of the max GPU memory allocated, or on CPU of the "
            "peak RSS growth during the run (the first row of the first repetition also pays one-time "
            "allocations: peak_mem_gb_reps); train_state_gb: what the "
            "trained model holds between steps, read from it: parameters, a gradient per trainable "
            "parameter, the optimizer's state tensors; "
            "mfu counts 6·N·T + 12·L·d·T² per sequence (plus a forward for a live reference) over real "
            "tokens against the device's dense bf16 peak; dpo reads reference log-probs precomputed like "
            "`score`; sft trains on the same sequences as drdo; TRL tokenizes the same rows itself"
        ),
    }


def _print(console: Console, report: dict[str, Any]) -> None:
    table = Table(
        title=f"bench train: {report['device']}, {report['pairs_per_step']} pairs/step, "
        f"{report['tokens_per_step']:.0f} tokens/step, median of {report['timed_steps']} steps"
    )
    for column in ("variant", "ms/step", "tokens/s", "peak GB", "MFU", "ratio to drdo"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, r in report["methods"].items():
        table.add_row(
            name,
            f"{r['step_s'] * 1000:.1f}",
            f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-",
            f"{r['peak_mem_gb']:.2f}" if r["peak_mem_gb"] is not None else "-",
            f"{r['mfu']:.1%}" if r["mfu"] else "-",
            f"{r['ratio_to_drdo']:.2f}" if r["ratio_to_drdo"] else "-",
        )
    console.print(table)
    measured = {**report["ratios"], "ray_overhead_ratio": report["ray_overhead_ratio"]}
    for key, target in report["targets"].items():
        value = measured.get(key)
        if value is None:
            console.print(f"  {key:28s} not measured")
            continue
        ok = value >= target if key == "drdo_tokens_per_s_over_sft" else value <= target
        bound = "≥" if key == "drdo_tokens_per_s_over_sft" else "≤"
        console.print(f"  {key:28s} {value:6.3f}  (target {bound} {target}) {'met' if ok else 'MISSED'}")
