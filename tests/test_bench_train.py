"""`drdo-ray bench train` measures every method on the same batches and reports ratios to DRDO
from the same run."""

from __future__ import annotations

import json

import pytest

from drdo_ray.cli import main


def test_bench_train_reports_every_method(tiny_model_dir, tmp_path):
    code = main(["bench", "train", "--model", str(tiny_model_dir), "--out", str(tmp_path), "--steps", "2",
                 "--repeats", "2", "--pairs", "2", "--set", "warmup=1"])
    assert code == 0
    report = json.loads((tmp_path / "bench_train.json").read_text())
    methods = report["methods"]
    assert set(methods) == {"drdo", "dpo", "dpo_live_ref", "edpo", "sft"}
    assert methods["drdo"]["ratio_to_drdo"] == 1.0
    for r in methods.values():
        assert len(r["step_s_reps"]) == 2 and r["step_s"] > 0
        assert r["ratio_to_drdo"] == pytest.approx(r["step_s"] / methods["drdo"]["step_s"])
    # SFT reads only prompt + chosen: about half the tokens of a pair method per step.
    assert methods["sft"]["tokens_per_s"] * methods["sft"]["step_s"] < methods["drdo"]["tokens_per_s"] * methods["drdo"]["step_s"]
