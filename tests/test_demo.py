"""The embedded default: `drdo-ray demo` runs configs/demo-tiny-cpu.yaml's pipeline: builds the
tiny model, prepares every dataset from the shipped samples, trains SFT -> Oracle (+ 3 e-DPO
Oracles) -> score -> DRDO, DPO, e-DPO, samples, win rates, report; a second run skips what exists.
The demo and `drdo-ray pipeline --config configs/demo-tiny-cpu.yaml` are one code path."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from drdo_ray.cli import main
from drdo_ray.config import load_config
from drdo_ray.demo import DEMO_CONFIG, demo_config, run_demo
from drdo_ray.pipeline import plan
from drdo_ray.pipeline_config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
DATASETS = set(yaml.safe_load(DEMO_CONFIG.read_text())["pipeline"]["datasets"])


def test_demo_and_the_pipeline_command_plan_the_same_stages(tmp_path, capsys):
    run = str(tmp_path / "run")
    config = ROOT / "configs" / "demo-tiny-cpu.yaml"
    assert config == DEMO_CONFIG
    piped = load_config(
        PipelineConfig, config_file=str(config), section="pipeline", overrides=[f"run_dir={run}"]
    )
    demo, pipeline = plan(demo_config(run)), plan(piped)
    assert [s.id for s in demo] == [s.id for s in pipeline]
    assert [s.config for s in demo] == [s.config for s in pipeline]  # the same stage configs, too
    assert {"model", "sft", "oracle", "score", "align", "generate", "winrate", "judge", "report"} <= {
        s.group for s in demo
    }
    # The two commands' dry runs print the same plan.
    main(["demo", "--out", run, "--dry-run"])
    demo_plan = capsys.readouterr().err
    main(["pipeline", "--config", str(config), "--set", f"run_dir={run}", "--dry-run"])
    pipeline_plan = capsys.readouterr().err
    assert demo_plan == pipeline_plan and "align:drdo" in demo_plan
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_demo_builds_every_artifact_and_skips_on_rerun(ray_session, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = run_demo(str(tmp_path), train_steps=4, eval_prompts=3, max_new_tokens=8)
    stats = result["datasets"]
    assert (tmp_path / "models" / "tiny" / "config.json").exists()
    assert set(stats) == DATASETS
    tldr = {name: stats[name]["tldr"]["splits"] for name in ("tldr_easy", "tldr_hard")}
    # The easy split is the confident, clearly different pairs; hard the opposite.
    assert tldr["tldr_easy"]["easy"]["mean_confidence"] > tldr["tldr_hard"]["hard"]["mean_confidence"]
    assert tldr["tldr_easy"]["easy"]["mean_distance"] > tldr["tldr_hard"]["hard"]["mean_distance"]
    assert stats["tldr_full"]["rejected_by_reason"]["excluded_cnndm_batch"] == 100
    for name in DATASETS:
        table = pq.read_table(tmp_path / "data" / name / "data")
        assert table.num_rows == stats[name]["rows_written"] > 0
        assert "prompt_ids" in table.column_names
    easy = (
        pq.read_table(tmp_path / "data" / "tldr_easy" / "data", columns=["difficulty"]).column(0).to_pylist()
    )
    assert set(easy) == {"easy"}

    models = tmp_path / "models"
    assert (models / "oracle" / "reward_head.safetensors").exists()
    for name in ("sft", "align-drdo", "align-dpo", "align-edpo"):
        assert (models / name / "model.safetensors").exists()
        assert not (models / name / "reward_head.safetensors").exists()
    scoring = json.loads((tmp_path / "scored" / "tldr_easy" / "scoring.json").read_text())
    assert scoring["rows"] == stats["tldr_easy"]["rows_written"]
    edpo = json.loads((tmp_path / "scored" / "tldr_easy_edpo" / "scoring.json").read_text())
    assert len(edpo["oracles"]) == 3  # e-DPO's three Oracles, one per head seed
    heads = [(models / f"oracle-edpo-{k}" / "reward_head.safetensors").read_bytes() for k in range(3)]
    assert len(set(heads)) == 3
    for run in ("sft", "oracle", "oracle-edpo-0", "align-drdo", "align-dpo", "align-edpo"):
        status = json.loads((tmp_path / "train" / run / "status.json").read_text())
        assert (status["status"], status["global_step"]) == ("finished", 4)

    for name in ("sft", "align-drdo", "align-dpo", "align-edpo"):  # 3 prompts x 4 temperatures each
        assert (
            len((tmp_path / "samples" / "tldr_sft" / name / "samples.jsonl").read_text().splitlines()) == 12
        )
    for opponent in ("align-dpo", "align-edpo", "sft", "reference"):
        path = tmp_path / "eval" / "tldr_sft" / f"winrate-align-drdo-vs-{opponent}" / "winrate.json"
        result = json.loads(path.read_text())
        assert result["wins"] + result["ties"] + result["losses"] == 12
        assert sorted(result["by_temperature"]) == ["0.2", "0.5", "0.7", "0.9"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Headline" in report and "align-drdo vs align-dpo" in report
    assert list((tmp_path / "report" / "figures").glob("*.png"))
    err = capsys.readouterr().err
    assert "set OPENAI_API_KEY" in err  # no key, no judge endpoint: the judge is skipped, said, not silent
    assert "training runs in" in err and f"report: {tmp_path / 'report' / 'report.md'}" in err  # the summary

    before = (tmp_path / "data" / "tldr_full" / "stats.json").stat().st_mtime_ns
    model_before = (models / "align-drdo" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    run_demo(str(tmp_path), train_steps=4, eval_prompts=3, max_new_tokens=8)
    assert (models / "align-drdo" / "model.safetensors").stat().st_mtime_ns == model_before
    assert (tmp_path / "data" / "tldr_full" / "stats.json").stat().st_mtime_ns == before
    assert "skip" in capsys.readouterr().err
    assert json.loads((tmp_path / "data" / "ultrafeedback" / "stats.json").read_text())["rows_written"] == 600
