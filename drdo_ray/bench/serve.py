"""`drdo-ray bench serve`: a load table of the OpenAI-compatible app. For each engine (``backend``:
transformers, vllm) it deploys the app (beside any running one, under /bench) and, for each mode
(batched: ``@serve.batch``; sequential: max_batch_size=1, one request at a time) and each
concurrency, sends ``requests`` completions with that many in flight through the official
``openai`` client: one cell. Modes differ only in user_config, so Serve reconfigures the live
replica (same process, same weights, warm caches). Every request generates exactly ``max_tokens``
tokens (``ignore_eos``), so every cell does the same work, and each is compared with the baseline
cell (the first engine's first mode) at the same concurrency, measured in the same run.

    OUT/bench_serve.json   per cell: requests/s, tokens/s, p50/p99 latency, errors, ratios to the
                           baseline cell, the machine's load average before and after it"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import storage
from ..config import ServeConfig
from .configs import BenchServeConfig

APP_NAME = "drdo-bench"
ROUTE = "/bench"
API_KEY = "bench-key"  # the bench app binds to 127.0.0.1 only
TINY = "tiny (hidden 128, 4 heads, built on the fly)"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def load_summary(
    latencies: list[float], tokens: int, failures: list[str], wall_s: float, *, concurrency: int
) -> dict[str, Any]:
    """One cell's figures: throughput over the wall time of the whole cell (successes only),
    latency percentiles of the successful requests, every failure counted."""
    ok = len(latencies)
    return {
        "requests": ok + len(failures),
        "concurrency": concurrency,
        "succeeded": ok,
        "failed": len(failures),
        "failures": failures[:5],
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(ok / wall_s, 2),
        "tokens_per_s": round(tokens / wall_s, 1),
        "latency_p50_s": round(percentile(latencies, 50), 4) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 99), 4) if latencies else None,
    }


async def run_load(
    base_url: str,
    *,
    model: str,
    api_key: str | None,
    requests: int,
    concurrency: int,
    max_tokens: int,
    prompt: str = "The quick brown fox",
) -> dict[str, Any]:
    """``requests`` completions, at most ``concurrency`` in flight; latency per request."""
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=api_key or "none", max_retries=0, timeout=600
    )
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures: list[str] = []
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        async with gate:
            t0 = time.perf_counter()
            try:
                response = await client.completions.create(
                    model=model,
                    prompt=f"{prompt} {i}",
                    max_tokens=max_tokens,
                    temperature=0.7,
                    top_p=0.8,
                    seed=i,
                    extra_body={"ignore_eos": True},
                )
            except Exception as err:  # counted, not raised: the report says how many failed
                failures.append(f"{type(err).__name__}: {err}")
                return
            latencies.append(time.perf_counter() - t0)
            tokens += response.usage.completion_tokens if response.usage else 0

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(requests)))
    finally:
        await client.close()
    summary = load_summary(
        latencies, tokens, failures, time.perf_counter() - started, concurrency=concurrency
    )
    return summary | {"max_tokens": max_tokens}


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value is not None and base else None


def add_baseline_ratios(cells: list[dict[str, Any]], engine: str, mode: str) -> None:
    """Each cell's figures over those of the baseline cell (``engine``, ``mode``) at the same
    concurrency: above 1 is faster for throughput, slower for latency."""
    base = {c["concurrency"]: c for c in cells if (c["engine"], c["mode"]) == (engine, mode)}
    for cell in cells:
        b = base.get(cell["concurrency"], {})
        cell["vs_baseline"] = {
            key: _ratio(cell[key], b.get(key))
            for key in ("requests_per_s", "tokens_per_s", "latency_p50_s", "latency_p99_s")
        }


def batching_speedups(cells: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """requests/s batched over sequential, per engine and concurrency (where both ran)."""
    runs = {(c["engine"], c["mode"], c["concurrency"]): c["requests_per_s"] for c in cells}
    out: dict[str, dict[str, float | None]] = {}
    for engine, mode, concurrency in runs:
        if mode == "batched" and (engine, "sequential", concurrency) in runs:
            speedup = _ratio(runs[engine, "batched", concurrency], runs[engine, "sequential", concurrency])
            out.setdefault(engine, {})[str(concurrency)] = speedup
    return out


def plan_engines(backends: list[str], model: str) -> tuple[list[str], dict[str, str]]:
    """The engines to load, in order, each once (``auto`` resolved), and why any cannot run here."""
    from ..artifacts import cuda_here
    from ..generation.engines import resolve_backend
    from ..generation.vllm_support import vllm_unusable_reason

    engines: list[str] = []
    skipped: dict[str, str] = {}
    for backend in backends:
        engine = resolve_backend(backend, model)
        why = vllm_unusable_reason(model, gpu=cuda_here()) if engine == "vllm" else None
        if why:
            skipped[engine] = why
        elif engine not in engines:
            engines.append(engine)
    return engines, skipped


@contextlib.contextmanager
def _bench_model(cfg: BenchServeConfig) -> Iterator[str]:
    """cfg.model, else the tiny model, with head size 32 (128 / 4) so that vLLM's CPU kernels
    (which lack the default 16) can serve it too: every engine runs the same weights."""
    if cfg.model is not None:
        yield cfg.model
        return
    from ..models import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        yield str(build_tiny_model(f"{tmp}/tiny", seed=0, hidden_size=128, num_heads=4))


@contextlib.contextmanager
def _serve_instance(port: int) -> Iterator[str]:
    """The bench route's base URL on the running Serve instance (on its own HTTP port; another
    ``port`` is refused), else on one started on 127.0.0.1 and shut down at the end."""
    from ray import serve

    from ..ray_runtime import ensure_ray
    from ..serve.app import free_port, proxy_port, running_proxy

    ensure_ray()
    running = proxy_port("127.0.0.1", port, running_proxy())
    owns_serve = running is None
    port = running or port or free_port()
    if owns_serve:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}{ROUTE}"
    finally:
        serve.delete(APP_NAME)
        if owns_serve:
            serve.shutdown()


def _deploy(cfg: BenchServeConfig, model: str, engine: str, max_batch_size: int) -> None:
    from ray import serve

    from ..serve.app import build_app

    serve_cfg = ServeConfig(
        model=model,
        backend=engine,
        api_key=API_KEY,
        served_model_name="bench",
        app_name=APP_NAME,
        route_prefix=ROUTE,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=cfg.batch_wait_timeout_s,
        max_ongoing_requests=max(*cfg.concurrency, cfg.max_batch_size) + 8,
        max_tokens_cap=max(1024, cfg.max_tokens),
        engine_kwargs=cfg.engine_kwargs,
    )
    serve.run(build_app(serve_cfg), name=APP_NAME, route_prefix=ROUTE)


def _replica_stats(base_url: str) -> dict[str, Any]:
    import json
    import urllib.request

    request = urllib.request.Request(f"{base_url}/stats", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _load(base_url: str, cfg: BenchServeConfig, requests: int, concurrency: int) -> dict[str, Any]:
    return asyncio.run(
        run_load(
            base_url,
            model="bench",
            api_key=API_KEY,
            requests=requests,
            concurrency=concurrency,
            max_tokens=cfg.max_tokens,
        )
    )


def _cell(base_url: str, cfg: BenchServeConfig, concurrency: int, batch_size: int) -> dict[str, Any]:
    """One cell on the deployed app, with the replica's batch counters and the machine's load."""
    load_before = os.getloadavg()[0]
    before = _replica_stats(base_url)
    run = _load(base_url, cfg, cfg.requests, concurrency)
    after = _replica_stats(base_url)
    batches = after["batches"] - before["batches"]
    batched = after["batched_requests"] - before["batched_requests"]
    return run | {
        "max_batch_size": batch_size,
        "batches": batches,
        "mean_batch_size": round(batched / batches, 2) if batches else None,
        "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _engine_cells(
    cfg: BenchServeConfig, model: str, engine: str, base_url: str, console: Console
) -> list[dict[str, Any]]:
    cells = []
    for mode in cfg.modes:
        batch_size = cfg.max_batch_size if mode == "batched" else 1
        started = time.perf_counter()
        _deploy(cfg, model, engine, batch_size)
        _load(base_url, cfg, min(8, cfg.requests), 8)  # warm-up
        console.print(f"[bold]bench serve[/] {engine} {mode}: ready in {time.perf_counter() - started:.0f}s")
        for concurrency in cfg.concurrency:
            cell = {"engine": engine, "mode": mode} | _cell(base_url, cfg, concurrency, batch_size)
            console.print(
                f"  {engine} {mode} x{concurrency}: {cell['succeeded']}/{cell['requests']} ok, "
                f"{cell['requests_per_s']} req/s, p50 {cell['latency_p50_s']}s, p99 {cell['latency_p99_s']}s"
            )
            cells.append(cell)
    return cells


def bench_serve(cfg: BenchServeConfig, console: Console | None = None) -> dict[str, Any]:
    """Deploy each engine, load every cell, report."""
    console = console or Console(stderr=True)
    with _bench_model(cfg) as model:
        engines, skipped = plan_engines(cfg.backend, model)
        for engine, why in skipped.items():
            console.print(f"  {engine} skipped: {why}")
        cells: list[dict[str, Any]] = []
        if engines:
            with _serve_instance(cfg.port) as base_url:
                for engine in engines:
                    cells += _engine_cells(cfg, model, engine, base_url, console)
    report = build_report(cfg, engines, skipped, cells)
    storage.makedirs(cfg.out)
    report["outputs"] = {"report": storage.join(cfg.out, "bench_serve.json")}
    storage.write_json(report["outputs"]["report"], report)
    return report


def preloaded_libraries() -> str:
    """The file names in LD_PRELOAD (vLLM's CPU guide asks for tcmalloc and Intel OpenMP there)."""
    return ":".join(Path(p).name for p in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p)


def build_report(
    cfg: BenchServeConfig, engines: list[str], skipped: dict[str, str], cells: list[dict[str, Any]]
) -> dict[str, Any]:
    baseline = {"engine": engines[0], "mode": cfg.modes[0]} if engines else None
    if baseline:
        add_baseline_ratios(cells, **baseline)
    return {
        "benchmark": "serve",
        "command": " ".join(sys.argv),
        "model": cfg.model or TINY,
        "engines": engines,
        "skipped": skipped,
        "modes": cfg.modes,
        "concurrency": cfg.concurrency,
        "requests": cfg.requests,
        "max_tokens": cfg.max_tokens,
        "max_batch_size": cfg.max_batch_size,
        "engine_kwargs": cfg.engine_kwargs,
        "machine": {"cpus": os.cpu_count(), "ld_preload": preloaded_libraries()},
        "baseline": baseline,
        "cells": cells,
        "batching_speedup": batching_speedups(cells),
    }
