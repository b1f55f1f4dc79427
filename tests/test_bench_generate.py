"""`drdo-ray bench generate` on a few prompts: every requested row reports tokens/s and its ratio
to plain `generate` (1.0 for itself), all rows generate the same number of tokens, and vLLM is
skipped with a reason where it cannot run the model."""

from __future__ import annotations

import json

from drdo_ray.bench.generate import bench_prompts
from drdo_ray.cli import main


def test_bench_generate_rows_and_ratios(tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "generate", "--model", str(tiny_model_dir), "--out", str(out), "--prompts", "4"]
    assert main([*argv, "--max-tokens", "5", "--repeats", "1"]) == 0
    report = json.loads((out / "bench_generate.json").read_text())
    engines = report["engines"]
    assert set(engines) == {"hf_generate", "transformers"}  # head size 16: vLLM cannot run it
    assert "vllm" in report["skipped"]
    assert engines["hf_generate"]["ratio_to_hf_generate"] == 1.0
    assert all(r["tokens_per_s"] > 0 and len(r["rounds"]) == 1 for r in engines.values())
    printed = capsys.readouterr().err
    assert "x hf_generate" in printed and "vllm" in printed
    prompts = bench_prompts(64)
    assert len(set(prompts)) == 64 and len({len(p.split()) for p in prompts}) > 1
