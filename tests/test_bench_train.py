"""`drdo-ray bench train` measures every method on the same batches and reports ratios to DRDO
from the same run; its FLOP and device-peak arithmetic is checked by hand."""

from __future__ import annotations

import json

import pytest

from drdo_ray.bench.train_inputs import device_peak, step_flops, synthetic_columns
from drdo_ray.cli import main


def test_bench_train_reports_every_method(tiny_model_dir, tmp_path):
    code = main(
        [
            "bench",
            "train",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path),
            "--steps",
            "2",
            "--repeats",
            "2",
            "--pairs",
            "2",
            "--set",
            "warmup=1",
            "--set",
            "logps_chunk_sizes=[4]",
            "--term-grads",
            "hidden",
            "--lora-ranks",
            "4",
            "--set",
            "ray_overhead=false",
            "--set",
            "trl=false",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "bench_train.json").read_text())
    methods = report["methods"]
    assert set(methods) == {
        "drdo",
        "dpo",
        "dpo_live_ref",
        "edpo",
        "sft",
        "drdo+chunk4",
        "drdo+term_grads_hidden",
        "drdo+lora4",
    }
    assert methods["drdo"]["ratio_to_drdo"] == 1.0
    assert methods["drdo+chunk4"]["logps_chunk_size"] == 4
    # The diagnostics row logged the per-term gradients at every step; the plain row timed none.
    assert methods["drdo+term_grads_hidden"]["term_grads_wrt"] == "hidden"
    assert methods["drdo+term_grads_hidden"]["term_grads_logged"] is True
    assert methods["drdo"]["term_grads_wrt"] is None and methods["drdo"]["term_grads_logged"] is False
    # The LoRA row: DRDO with rank-4 adapters, its step time and memory over full fine-tuning's.
    assert methods["drdo+lora4"]["lora_rank"] == 4 and methods["drdo"]["lora_rank"] is None
    ratios = report["ratios"]
    assert ratios["drdo_lora_step_over_full"] == methods["drdo+lora4"]["step_s"] / methods["drdo"]["step_s"]
    # what the model holds: LoRA keeps no gradient or optimizer state for the frozen base
    assert methods["drdo+lora4"]["train_state_gb"] < methods["drdo"]["train_state_gb"]
    assert 0 < ratios["drdo_lora_train_state_over_full"] < 1
    for r in methods.values():
        assert len(r["step_s_reps"]) == 2 and r["step_s"] > 0
        assert r["ratio_to_drdo"] == pytest.approx(r["step_s"] / methods["drdo"]["step_s"])
        assert r["peak_mem_gb"] is not None and r["mfu"] is None  # no MFU without a GPU peak
    # SFT trains on the pair batches' sequences: exactly DRDO's tokens per step.
    tokens = {m: r["tokens_per_s"] * r["step_s"] for m, r in methods.items()}
    assert tokens["sft"] == pytest.approx(tokens["drdo"]) == pytest.approx(report["tokens_per_step"])
    assert report["ratios"]["drdo_tokens_per_s_over_sft"] == pytest.approx(
        methods["drdo"]["tokens_per_s"] / methods["sft"]["tokens_per_s"]
    )
    assert report["ray_overhead_ratio"] is None


@pytest.mark.usefixtures("ray_session")
def test_bench_train_ray_overhead(tiny_model_dir, tmp_path):
    """DRDO under Ray Train (1 worker, Ray Data feed) against the direct loop, same rows."""
    code = main(
        [
            "bench",
            "train",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path),
            "--steps",
            "3",
            "--repeats",
            "1",
            "--pairs",
            "2",
            "--set",
            "warmup=1",
            "--set",
            "methods=[drdo]",
            "--set",
            "trl=false",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "bench_train.json").read_text())
    assert len(report["ray_step_s_reps"]) == 1 and report["ray_step_s_reps"][0] > 0
    assert report["ray_overhead_ratio"] == pytest.approx(
        report["ray_step_s_reps"][0] / report["methods"]["drdo"]["step_s"]
    )


def test_step_flops_by_hand():
    dims = {"matmul_params": 1000, "layers": 2, "width": 8}
    # One sequence of 10 tokens: forward 2·N·T + 4·L·d·T² = 20000 + 6400; training is 3 passes.
    assert step_flops([10], dims) == 3 * (20_000 + 6_400)
    # A live reference adds one forward-only pass.
    assert step_flops([10, 10], dims, forward_only_passes=1) == 4 * 2 * (20_000 + 6_400)


def test_device_peak_matches_longest_name():
    assert device_peak("NVIDIA H200", None) == 989e12
    assert device_peak("NVIDIA H20", None) == 148e12
    assert device_peak("NVIDIA A100-SXM4-80GB", None) == 312e12
    assert device_peak("Some Accelerator", None) is None
    assert device_peak("Some Accelerator", 100.0) == 100e12


def test_synthetic_rows_have_the_asked_length():
    cols = synthetic_columns(vocab_size=50, rows=4, seq_len=9)
    for i in range(4):
        assert len(cols["prompt_ids"][i]) + len(cols["chosen_ids"][i]) == 9
        assert len(cols["prompt_ids"][i]) + len(cols["rejected_ids"][i]) == 9
    assert all(3 <= t < 50 for row in cols["prompt_ids"] for t in row)
