"""`drdo-ray bench serve`'s load table without a server: the figures of a cell from fixed
latencies, the ratios to the baseline cell, the rendered table, the engines it plans and the
flags of the single-valued settings it had before they were lists. The load itself runs against
the real app in test_serve_app.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drdo_ray.bench.configs import BenchServeConfig
from drdo_ray.bench.serve import (
    add_baseline_ratios,
    batching_speedups,
    build_report,
    load_summary,
    percentile,
    plan_engines,
)
from drdo_ray.bench.tables import render
from drdo_ray.cli import build_parser, main
from drdo_ray.cli_flags import config_from_args


def test_percentiles_are_nearest_rank() -> None:
    hundred = [i / 100 for i in range(100, 0, -1)]  # 1.00 .. 0.01, unsorted on purpose
    assert percentile(hundred, 50) == 0.50 and percentile(hundred, 99) == 0.99
    assert percentile(hundred, 100) == 1.00 and percentile(hundred, 0) == 0.01
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([7.0], 99) == 7.0


def test_a_cell_from_fixed_latencies() -> None:
    latencies = [i / 100 for i in range(1, 101)]  # 100 successes, 0.01 .. 1.00 s
    cell = load_summary(latencies, 3200, ["APIStatusError: 503"] * 7, 10.0, concurrency=16)
    assert cell["requests"] == 107 and cell["succeeded"] == 100 and cell["failed"] == 7
    assert cell["requests_per_s"] == 10.0 and cell["tokens_per_s"] == 320.0  # successes over wall time
    assert (cell["latency_p50_s"], cell["latency_p99_s"]) == (0.50, 0.99)
    assert cell["failures"] == ["APIStatusError: 503"] * 5  # a sample; the count is complete
    failed = load_summary([], 0, ["ConnectError"], 2.0, concurrency=1)
    assert failed["requests_per_s"] == 0 and failed["latency_p50_s"] is None


def _cell(engine: str, mode: str, concurrency: int, rps: float, p50: float) -> dict:
    latencies = [p50] * 9 + [2 * p50]
    cell = load_summary(latencies, 10 * 32, [], 10 / rps, concurrency=concurrency)  # 32 tokens each
    return cell | {
        "engine": engine,
        "mode": mode,
        "max_batch_size": 16,
        "batches": 4,
        "mean_batch_size": 2.5,
        "load_1m": [2.0, 2.5],
    }


CELLS = [
    _cell("transformers", "batched", 1, 5.0, 0.2),
    _cell("transformers", "batched", 64, 50.0, 1.0),
    _cell("transformers", "sequential", 64, 10.0, 5.0),
    _cell("vllm", "batched", 1, 4.0, 0.25),
    _cell("vllm", "batched", 64, 100.0, 0.5),
]


def test_ratios_to_the_baseline_cell_at_the_same_concurrency() -> None:
    cells = [dict(c) for c in CELLS]
    add_baseline_ratios(cells, "transformers", "batched")
    by = {(c["engine"], c["mode"], c["concurrency"]): c["vs_baseline"] for c in cells}
    assert by["transformers", "batched", 1] == dict.fromkeys(by["transformers", "batched", 1], 1.0)
    assert (
        by["vllm", "batched", 64]["requests_per_s"] == 2.0
        and by["vllm", "batched", 64]["tokens_per_s"] == 2.0
    )
    assert (
        by["vllm", "batched", 64]["latency_p50_s"] == 0.5
        and by["vllm", "batched", 64]["latency_p99_s"] == 0.5
    )
    assert (
        by["vllm", "batched", 1]["requests_per_s"] == 0.8
        and by["vllm", "batched", 1]["latency_p50_s"] == 1.25
    )
    assert by["transformers", "sequential", 64]["requests_per_s"] == 0.2
    assert batching_speedups(cells) == {"transformers": {"64": 5.0}}


def test_the_load_table_shows_every_cell(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/opt/x/libiomp5.so /lib/libtcmalloc.so.4")
    cfg = BenchServeConfig(requests=2000, modes=["batched", "sequential"])
    cells = [dict(c) for c in CELLS]
    report = build_report(cfg, ["transformers", "vllm"], {"other": "a reason"}, cells)
    assert report["baseline"] == {"engine": "transformers", "mode": "batched"}
    (tmp_path / "cpu-bench-serve-load.json").write_text(json.dumps(report))
    text = render(tmp_path)
    assert "## cpu-bench-serve-load.json (serving load benchmark)" in text
    assert "2000 requests per cell" in text and "other skipped: a reason." in text
    rows = [
        line for line in text.splitlines() if line.startswith("| transformers") or line.startswith("| vllm")
    ]
    assert len(rows) == len(CELLS)
    assert (
        "| vllm | batched | 64 | 10 / 0 | 100.00 | 3200 | 0.500 | 1.000 | 2.5 | 2.00× | 0.50× | 0.50× |"
        in text
    )
    assert "| transformers | sequential | 64 | 10 / 0 | 10.00 | 320 | 5.000 | 10.000 |" in text
    assert "2.0 → 2.5" in text
    assert "LD_PRELOAD libiomp5.so:libtcmalloc.so.4;" in text  # file names, not this machine's paths


def test_engines_planned_once_and_vllm_skipped_with_its_reason(tiny_model_dir) -> None:
    # The session's tiny model has head size 16, which vLLM's CPU kernels lack.
    engines, skipped = plan_engines(["transformers", "auto", "vllm"], str(tiny_model_dir))
    assert engines == ["transformers"]
    assert "head size" in skipped["vllm"]


def test_single_values_of_the_former_scalar_settings_still_work(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["bench", "serve", "--concurrency", "64", "--backend", "vllm", "--modes", "batched"]
    )
    cfg = config_from_args(BenchServeConfig, args, "bench_serve")
    assert (cfg.concurrency, cfg.backend, cfg.modes) == ([64], ["vllm"], ["batched"])
    args = parser.parse_args(["bench", "serve", "--concurrency", "1,16,64", "--backend", "transformers,vllm"])
    cfg = config_from_args(BenchServeConfig, args, "bench_serve")
    assert (cfg.concurrency, cfg.backend) == ([1, 16, 64], ["transformers", "vllm"])
    assert BenchServeConfig.model_validate({"concurrency": 64, "backend": "auto"}).concurrency == [64]
    assert BenchServeConfig.model_validate({"concurrency": "1,16"}).concurrency == [1, 16]
    with pytest.raises(ValueError, match="concurrency needs values >= 1"):
        BenchServeConfig(concurrency=[16, 0])
    assert main(["bench", "serve", "--concurrency", "0", "--out", str(tmp_path)]) == 2
