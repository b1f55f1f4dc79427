"""LoRA on Ray Train workers, through the pipeline: the tiny pipeline with LoRA turned on per stage
(the Oracle on DeepSpeed ZeRO-2, DRDO on ZeRO-3, DPO with a live reference on DDP, 2 workers
each) trains, then scores with the Oracle's merged folder, samples the DRDO policy's, compares it
with the references and reports, as on full fine-tunes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from drdo_ray.config import load_config
from drdo_ray.pipeline import run_pipeline
from drdo_ray.pipeline_config import PipelineConfig
from drdo_ray.run_layout import TRAINING_CONFIG_FILE

pytest.importorskip("peft")

LORA = {"enabled": True, "rank": 4, "alpha": 8}


def _config(run: Path) -> dict:
    return {
        "pipeline": {
            "run_dir": str(run),
            "tiny_model": {"seed": 0},
            "datasets": {"tldr_easy": {"source": "tldr", "input": "sample", "tldr_split": "easy"}},
            "train": {"num_workers": 2, "max_steps": 2, "checkpoint_every": 2, "micro_batch_size": 2},
            "oracle": {
                "data": "tldr_easy",
                "lr": 1.0e-3,
                "lora": LORA,
                "deepspeed": {"enabled": True, "zero_stage": 2},
            },
            "score": {"data": "tldr_easy", "reduction": "sum"},
            "align": {
                "lr": 5.0e-3,
                "lora": LORA,
                "runs": {
                    "drdo": {"deepspeed": {"enabled": True, "zero_stage": 3}},
                    "dpo": {"live_reference": str(run / "models" / "tiny")},
                },
            },
            "generate": {
                "prompts": ["tldr_easy"],
                "policies": ["align-drdo"],
                "temperatures": [0.7],
                "limit": 2,
                "max_new_tokens": 4,
                "backend": "transformers",
            },
            "winrate": {"a": "align-drdo", "against": ["reference"], "bootstrap": 10},
            "report": {},
        }
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_tiny_pipeline_with_lora_on_the_align_stage_makes_a_report(ray_session, tmp_path):
    run = tmp_path / "run"
    path = tmp_path / "lora-pipeline.yaml"
    path.write_text(yaml.safe_dump(_config(run)))
    cfg = load_config(PipelineConfig, config_file=str(path), section="pipeline")
    run_pipeline(cfg)
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    assert stages and all(entry["status"] == "done" for entry in stages.values()), stages
    assert "align-drdo" in (run / "report" / "report.md").read_text()

    base = load_file(str(run / "models" / "tiny" / "model.safetensors"))
    for name in ("oracle", "align-drdo", "align-dpo"):
        folder = run / "models" / name
        saved = json.loads((folder / TRAINING_CONFIG_FILE).read_text())
        assert saved["lora"]["enabled"] and saved["lora"]["rank"] == 4
        # merged: a plain transformers folder of the base's tensors, with the adapters folded in
        assert not list(folder.glob("adapter_*"))
        weights = load_file(str(folder / "model.safetensors"))
        assert set(weights) == set(base)
        moved = [k for k in base if not torch.equal(base[k], weights[k])]
        assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), moved
        # the checkpoints hold what trained: the adapters (and a reward head), not the base
        checkpoint = sorted((run / "train" / name).glob("step_*"))[-1]
        size = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
        assert size < (folder / "model.safetensors").stat().st_size, (name, size)
    assert (run / "models" / "oracle" / "reward_head.safetensors").is_file()
    winrate = json.loads(
        (run / "eval" / "tldr_easy" / "winrate-align-drdo-vs-reference" / "winrate.json").read_text()
    )
    assert winrate["wins"] + winrate["ties"] + winrate["losses"] == 2
