"""The run directory is spelled once (drdo_ray.run_layout.RunLayout): its paths are a public
contract (README, the report, resumed runs), and the planner, the trainer and the report read them
from there."""

from __future__ import annotations

import os

from drdo_ray.config import TrainConfig
from drdo_ray.pipeline import plan
from drdo_ray.pipeline_config import PipelineConfig
from drdo_ray.run_layout import RunLayout
from drdo_ray.train.ray_trainer import model_dir


def test_the_layout_paths():
    run = RunLayout("s3://bucket/exp/")
    assert run.root == "s3://bucket/exp"
    assert {
        "tiny": run.tiny_model,
        "data": run.data("tldr"),
        "scored": run.scored("tldr_edpo"),
        "train": run.train("align-drdo"),
        "metrics": run.metrics("sft"),
        "status": run.train_status("sft"),
        "workers": run.workers("sft"),
        "model": run.model("oracle-edpo-1"),
        "config": run.training_config("sft"),
        "samples": run.samples("alpaca_eval", "align-drdo"),
        "eval": run.eval("alpaca_eval", "winrate-align-drdo-vs-sft"),
        "report": run.report,
        "pipeline": run.pipeline_status,
    } == {
        "tiny": "s3://bucket/exp/models/tiny",
        "data": "s3://bucket/exp/data/tldr",
        "scored": "s3://bucket/exp/scored/tldr_edpo",
        "train": "s3://bucket/exp/train/align-drdo",
        "metrics": "s3://bucket/exp/train/sft/metrics.jsonl",
        "status": "s3://bucket/exp/train/sft/status.json",
        "workers": "s3://bucket/exp/train/sft/workers",
        "model": "s3://bucket/exp/models/oracle-edpo-1",
        "config": "s3://bucket/exp/models/sft/drdo_training.json",
        "samples": "s3://bucket/exp/samples/alpaca_eval/align-drdo",
        "eval": "s3://bucket/exp/eval/alpaca_eval/winrate-align-drdo-vs-sft",
        "report": "s3://bucket/exp/report",
        "pipeline": "s3://bucket/exp/pipeline.json",
    }


def test_absolute_resolves_local_roots_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RunLayout("runs/x").absolute().root == os.path.join(str(tmp_path.resolve()), "runs", "x")
    assert RunLayout("file://runs/y").absolute().root == str(tmp_path.resolve() / "runs" / "y")
    assert RunLayout("s3://b/x").absolute().root == "s3://b/x"


def test_the_planner_and_the_trainer_write_where_the_layout_says():
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": "RUN",
            "base_model": "org/model",
            "datasets": {"prefs": {"source": "tldr", "input": "sample"}},
            "sft": {"data": "prefs"},
            "oracle": {"data": "prefs"},
            "score": {"data": "prefs"},
            "align": {"runs": ["drdo"]},
            "generate": {"prompts": ["prefs"]},
        }
    )
    layout = RunLayout("RUN")
    steps = {s.id: s for s in plan(cfg)}
    assert steps["align:drdo"].output == layout.model("align-drdo") == model_dir(steps["align:drdo"].config)
    assert steps["align:drdo"].clean == (layout.model("align-drdo"), layout.train("align-drdo"))
    assert steps["generate:prefs:sft"].output == layout.samples("prefs", "sft")
    assert steps["report"].output == layout.report
    # A training run without a name is <stage>, or align-<loss>, under train/ and models/.
    bare = TrainConfig(stage="align", loss="dpo", model="m", data="d", run_dir="R")
    assert (bare.run_name, model_dir(bare)) == ("align-dpo", "R/models/align-dpo")
