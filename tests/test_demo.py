"""The embedded default: `drdo-ray demo` builds the tiny model, prepares every dataset from
the shipped samples, trains SFT -> Oracle -> score -> DRDO and DPO; a second run skips what
exists."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from drdo_ray.demo import DEMO_DATASETS, run_demo


@pytest.mark.slow
def test_demo_builds_every_artifact_and_skips_on_rerun(ray_session, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    stats = run_demo(str(tmp_path), train_steps=4, eval_prompts=3, max_new_tokens=8)
    assert (tmp_path / "models" / "tiny" / "config.json").exists()
    assert set(stats) == {name for name, *_ in DEMO_DATASETS}
    tldr = {name: stats[name]["tldr"]["splits"] for name in ("tldr_easy", "tldr_hard")}
    # The easy split is the confident, clearly different pairs; hard the opposite.
    assert tldr["tldr_easy"]["easy"]["mean_confidence"] > tldr["tldr_hard"]["hard"]["mean_confidence"]
    assert tldr["tldr_easy"]["easy"]["mean_distance"] > tldr["tldr_hard"]["hard"]["mean_distance"]
    assert stats["tldr_full"]["rejected_by_reason"]["excluded_cnndm_batch"] == 100
    for name, *_ in DEMO_DATASETS:
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
    ensemble = json.loads((tmp_path / "scored" / "tldr_easy_ensemble" / "scoring.json").read_text())
    assert len(ensemble["oracles"]) == 3  # e-DPO's three Oracles, one per head seed
    heads = [(models / f"oracle-ens-{k}" / "reward_head.safetensors").read_bytes() for k in range(3)]
    assert len(set(heads)) == 3
    for run in ("sft", "oracle", "oracle-ens-0", "align-drdo", "align-dpo", "align-edpo"):
        status = json.loads((tmp_path / "train" / run / "status.json").read_text())
        assert (status["status"], status["global_step"]) == ("finished", 4)

    for name in ("sft", "align-drdo", "align-dpo", "align-edpo"):  # 3 prompts x 4 temperatures each
        assert len((tmp_path / "samples" / name / "samples.jsonl").read_text().splitlines()) == 12
    for opponent in ("align-dpo", "align-edpo", "sft", "reference"):
        result = json.loads((tmp_path / "eval" / f"winrate-drdo-vs-{opponent}" / "winrate.json").read_text())
        assert result["wins"] + result["ties"] + result["losses"] == 12
        assert sorted(result["by_temperature"]) == ["0.2", "0.5", "0.7", "0.9"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Headline" in report and "align-drdo vs align-dpo" in report
    assert list((tmp_path / "report" / "figures").glob("*.png"))
    assert "judge skipped" in capsys.readouterr().err  # no key, no judge endpoint: said, not silent

    before = (tmp_path / "data" / "tldr_full" / "stats.json").stat().st_mtime_ns
    model_before = (models / "align-drdo" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    run_demo(str(tmp_path), train_steps=4, eval_prompts=3, max_new_tokens=8)
    assert (models / "align-drdo" / "model.safetensors").stat().st_mtime_ns == model_before
    assert (tmp_path / "data" / "tldr_full" / "stats.json").stat().st_mtime_ns == before
    assert "skip" in capsys.readouterr().err
    assert json.loads((tmp_path / "data" / "ultrafeedback" / "stats.json").read_text())["rows_written"] == 600
