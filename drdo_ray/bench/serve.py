"""`drdo-ray bench serve`: a bounded load test of the OpenAI-compatible app. It deploys the app
(beside any running one, under /bench), fires N requests with C in flight through the
official ``openai`` client, and repeats with ``@serve.batch`` off (max_batch_size=1: one
request at a time) in the same run, on the same replica, so the speed-up is like for like.
Every request generates exactly ``max_tokens`` tokens (``ignore_eos``), so both modes do the
same work.

    OUT/bench_serve.json   per mode: requests/s, tokens/s, p50/p99 latency, failures; speed-up"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from rich.console import Console

from .. import storage
from ..config import ServeConfig
from .configs import BenchServeConfig

APP_NAME = "drdo-bench"
ROUTE = "/bench"
API_KEY = "bench-key"  # the bench app binds to 127.0.0.1 only


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


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
    wall = time.perf_counter() - started
    return {
        "requests": requests,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "succeeded": len(latencies),
        "failed": len(failures),
        "failures": failures[:5],
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 99), 3) if latencies else None,
    }


def _replica_stats(base_url: str) -> dict[str, Any]:
    import json
    import urllib.request

    request = urllib.request.Request(f"{base_url}/stats", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def bench_serve(cfg: BenchServeConfig, console: Console | None = None) -> dict[str, Any]:
    """Deploy, load, report. Uses the running Serve instance if there is one (on its own HTTP
    port; another cfg.port is refused), else starts one on 127.0.0.1 and shuts it down at the end."""
    from ray import serve

    from ..ray_runtime import ensure_ray
    from ..serve.app import build_app, free_port, proxy_port, running_proxy

    console = console or Console(stderr=True)
    model = cfg.model
    tmp = None
    if model is None:
        from ..models import build_tiny_model

        tmp = tempfile.TemporaryDirectory(prefix="bench-serve-")
        # Head size 32 (128 / 4) when vLLM may serve it: its CPU kernels lack the default 16.
        size = {} if cfg.backend == "transformers" else {"hidden_size": 128, "num_heads": 4}
        model = str(build_tiny_model(f"{tmp.name}/tiny", seed=0, **size))
    ensure_ray()
    running = proxy_port("127.0.0.1", cfg.port, running_proxy())
    owns_serve = running is None
    port = running or cfg.port or free_port()
    if owns_serve:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    base_url = f"http://127.0.0.1:{port}{ROUTE}"

    def deploy(max_batch_size: int) -> None:
        # Only user_config differs between modes: Serve reconfigures the live replica
        # (same process, same weights, warm caches) instead of starting a new one.
        serve_cfg = ServeConfig(
            model=model,
            backend=cfg.backend,
            api_key=API_KEY,
            served_model_name="bench",
            app_name=APP_NAME,
            route_prefix=ROUTE,
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=cfg.batch_wait_timeout_s,
            max_ongoing_requests=max(cfg.concurrency, cfg.max_batch_size) + 8,
            max_tokens_cap=max(1024, cfg.max_tokens),
            engine_kwargs=cfg.engine_kwargs,
        )
        serve.run(build_app(serve_cfg), name=APP_NAME, route_prefix=ROUTE)

    results: dict[str, Any] = {}
    try:
        for mode in cfg.modes:
            deploy(cfg.max_batch_size if mode == "batched" else 1)
            load = {"model": "bench", "api_key": API_KEY, "max_tokens": cfg.max_tokens}
            asyncio.run(run_load(base_url, requests=min(8, cfg.requests), concurrency=8, **load))  # warm-up
            before = _replica_stats(base_url)
            console.print(
                f"[bold]bench serve[/] {mode}: {cfg.requests} requests, {cfg.concurrency} in flight, "
                f"{cfg.max_tokens} tokens each"
            )
            run = asyncio.run(run_load(base_url, requests=cfg.requests, concurrency=cfg.concurrency, **load))
            after = _replica_stats(base_url)
            batches = after["batches"] - before["batches"]
            run["max_batch_size"] = cfg.max_batch_size if mode == "batched" else 1
            run["batches"] = batches
            run["mean_batch_size"] = (
                round((after["batched_requests"] - before["batched_requests"]) / batches, 2)
                if batches
                else None
            )
            results[mode] = run
    finally:
        serve.delete(APP_NAME)
        if owns_serve:
            serve.shutdown()
        if tmp is not None:
            tmp.cleanup()

    report: dict[str, Any] = {
        "model": cfg.model or "tiny (built on the fly)",
        "backend": cfg.backend,
        "requests": cfg.requests,
        "concurrency": cfg.concurrency,
        "max_tokens": cfg.max_tokens,
        **results,
    }
    if "batched" in results and "sequential" in results and results["sequential"]["requests_per_s"]:
        report["batching_speedup"] = round(
            results["batched"]["requests_per_s"] / results["sequential"]["requests_per_s"], 2
        )
    storage.makedirs(cfg.out)
    report["outputs"] = {"report": storage.join(cfg.out, "bench_serve.json")}
    storage.write_json(report["outputs"]["report"], report)
    return report
