"""`drdo-ray score` on Ray Data: Oracle rewards and reference log-probs equal a direct
forward pass, e-DPO ensembles keep per-member columns, an identical request is reused and a
different one refused, and the training stage's check_scored catches every mismatch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

from drdo_ray.cli import main
from drdo_ray.config import PrepareConfig, ScoreConfig
from drdo_ray.data.readers import sample_path
from drdo_ray.data.sources import SOURCES
from drdo_ray.errors import UserError
from drdo_ray.models import PolicyWithRewardHead, collate_pairs, pair_forward
from drdo_ray.scoring import check_scored, fingerprint, oracle_count, score

ROWS = 40
REF_COLUMNS = ["ref_chosen_logps", "ref_rejected_logps"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, ray_session, tiny_model_dir) -> dict[str, Path]:
    """A 40-row tokenized Ultrafeedback slice and two Oracles (head seeds 1, 2) beside it."""
    from transformers import AutoTokenizer

    from drdo_ray.data.prepare import prepare

    root = tmp_path_factory.mktemp("scoring")
    lines = sample_path(SOURCES["ultrafeedback"]).read_text().splitlines()[:ROWS]
    (root / "uf.jsonl").write_text("\n".join(lines) + "\n")
    prepare(
        PrepareConfig(
            source="ultrafeedback",
            input=str(root / "uf.jsonl"),
            out=str(root / "prep"),
            tokenizer=str(tiny_model_dir),
        ),
        Console(file=io.StringIO()),
    )
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    paths = {"root": root, "prep": root / "prep", "model": tiny_model_dir}
    for seed in (1, 2):
        model = PolicyWithRewardHead.from_pretrained(tiny_model_dir, head_seed=seed)
        paths[f"oracle{seed}"] = model.save_pretrained(root / f"oracle{seed}", tokenizer=tok)
    return paths


def _score(console: Console | None = None, **kwargs) -> dict:
    return score(
        ScoreConfig(**{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}),
        console or Console(file=io.StringIO()),
    )


@pytest.fixture(scope="module")
def scored_sum(work) -> Path:
    """Oracle + reference (sum) through the CLI, as a user runs it."""
    out = work["root"] / "scored-sum"
    argv = [
        "score",
        "--data",
        str(work["prep"]),
        "--oracle",
        str(work["oracle1"]),
        "--reference",
        str(work["model"]),
        "--reduction",
        "sum",
        "--out",
        str(out),
        "--batch-size",
        "32",
        "--set",
        "num_gpus_per_actor=0",
    ]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def scored_edpo_mean(work) -> Path:
    out = work["root"] / "scored-ens"
    _score(
        data=work["prep"],
        out=out,
        oracles=[str(work["oracle1"]), str(work["oracle2"])],
        reference=work["model"],
        reduction="mean",
        batch_size=8,
    )
    return out


def _direct(model_dir: Path, table, *, reduction: str):
    """Rewards and log-probs of every row in one plain forward pass, no Ray."""
    from transformers import AutoModelForCausalLM

    head = (model_dir / "reward_head.safetensors").exists()
    model = (
        PolicyWithRewardHead.from_pretrained(model_dir).freeze()
        if head
        else AutoModelForCausalLM.from_pretrained(model_dir).eval()
    )
    batch = collate_pairs(
        table["prompt_ids"].to_pylist(),
        table["chosen_ids"].to_pylist(),
        table["rejected_ids"].to_pylist(),
        pad_id=0,
    )
    with torch.inference_mode():
        return pair_forward(model, batch, reduction=reduction)


def _read(out: Path, ids):
    """The scored table, in the order of ``ids`` (Ray Data does not keep row order)."""
    table = pq.read_table(out / "data")
    order = {v: i for i, v in enumerate(table["id"].to_pylist())}
    return table.take([order[i] for i in ids])


@pytest.mark.parametrize("which", ["sum", "mean"])
def test_scores_equal_a_direct_forward_pass(work, scored_sum, scored_edpo_mean, which):
    prep = pq.read_table(work["prep"] / "data")
    out = scored_sum if which == "sum" else scored_edpo_mean
    table = _read(out, prep["id"].to_pylist())
    assert table.num_rows == prep.num_rows > 0
    assert set(prep.column_names) <= set(table.column_names)  # every input column kept
    ref = _direct(work["model"], prep, reduction=which)
    got = {c: table[c].to_numpy() for c in [*REF_COLUMNS, "oracle_chosen", "oracle_rejected"]}
    assert all(table.schema.field(c).type == "double" for c in got)
    np.testing.assert_allclose(got["ref_chosen_logps"], ref.chosen_logps.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["ref_rejected_logps"], ref.rejected_logps.numpy(), rtol=1e-5, atol=1e-5)
    oracle = _direct(work["oracle1"], prep, reduction=which)
    name = "oracle_chosen" if which == "sum" else "oracle_chosen_0"
    np.testing.assert_allclose(table[name].to_numpy(), oracle.chosen_rewards.numpy(), rtol=1e-5, atol=1e-5)
    provenance = json.loads((out / "scoring.json").read_text())
    assert provenance["reduction"] == which and provenance["rows"] == prep.num_rows
    assert json.loads((out / "source_stats.json").read_text()) == json.loads(
        (work["prep"] / "stats.json").read_text()
    )


def test_edpo_oracles_keep_members_and_their_mean(work, scored_edpo_mean):
    prep = pq.read_table(work["prep"] / "data")
    table = _read(scored_edpo_mean, prep["id"].to_pylist())
    second = _direct(work["oracle2"], prep, reduction="mean")
    np.testing.assert_allclose(
        table["oracle_rejected_1"].to_numpy(), second.rejected_rewards.numpy(), rtol=1e-5, atol=1e-5
    )
    for side in ("chosen", "rejected"):
        members = np.stack([table[f"oracle_{side}_{k}"].to_numpy() for k in range(2)])
        assert not np.allclose(members[0], members[1])  # different head seeds, different Oracles
        np.testing.assert_allclose(table[f"oracle_{side}"].to_numpy(), members.mean(0), rtol=1e-12)
    provenance = json.loads((scored_edpo_mean / "scoring.json").read_text())
    assert oracle_count(provenance) == 2
    assert [o["path"] for o in provenance["oracles"]] == [str(work["oracle1"]), str(work["oracle2"])]


def test_identical_request_is_reused_different_refused_force_rescores(work, scored_sum, tmp_path):
    import shutil

    request = {
        "data": work["prep"],
        "oracles": [str(work["oracle1"])],
        "reference": work["model"],
        "reduction": "sum",
    }
    files = {p: p.stat().st_mtime_ns for p in (scored_sum / "data").glob("*.parquet")}
    log = io.StringIO()
    again = _score(Console(file=log, width=200), out=scored_sum, **request)
    assert again["reused"] and "reused" in log.getvalue()
    assert {p: p.stat().st_mtime_ns for p in (scored_sum / "data").glob("*.parquet")} == files

    with pytest.raises(UserError, match=r"different oracle #0.*--force"):
        _score(out=scored_sum, **{**request, "oracles": [str(work["oracle2"])]})
    with pytest.raises(UserError, match="reduction sum, not mean"):
        _score(out=scored_sum, **{**request, "reduction": "mean"})
    with pytest.raises(UserError, match="a different reference"):
        _score(out=scored_sum, **{**request, "reference": None})

    copy = shutil.copytree(scored_sum, tmp_path / "copy")
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "data").glob("*.parquet")}
    forced = _score(out=copy, force=True, **request)
    assert not forced["reused"] and forced["rows"] == again["rows"]
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "data").glob("*.parquet")} != before


def test_check_scored(work, scored_sum, scored_edpo_mean):
    all_columns = ["oracle_chosen", "oracle_rejected", *REF_COLUMNS]
    provenance = check_scored(
        str(scored_sum),
        needs=all_columns,
        reduction="sum",
        oracles=[str(work["oracle1"])],
        reference=str(work["model"]),
    )
    assert oracle_count(provenance) == 1
    members = ["oracle_chosen_0", "oracle_rejected_0", "oracle_chosen_1", "oracle_rejected_1"]
    assert oracle_count(check_scored(str(scored_edpo_mean), needs=members)) == 2
    assert check_scored(str(work["prep"]), needs=[]) == {}  # nothing needed, nothing checked

    with pytest.raises(UserError, match="oracle_chosen_1"):
        check_scored(str(scored_sum), needs=members)
    with pytest.raises(UserError, match="reduction=mean"):
        check_scored(str(scored_sum), needs=REF_COLUMNS, reduction="mean")
    with pytest.raises(UserError, match="different oracle"):
        check_scored(str(scored_sum), needs=["oracle_chosen"], oracles=[str(work["oracle2"])])
    with pytest.raises(UserError, match="different oracle"):  # the order of an ensemble matters
        check_scored(
            str(scored_edpo_mean), needs=members, oracles=[str(work["oracle2"]), str(work["oracle1"])]
        )
    with pytest.raises(UserError, match="different reference"):
        check_scored(str(scored_sum), needs=REF_COLUMNS, reference=str(work["oracle1"]))
    with pytest.raises(UserError, match="not a scored dataset; run drdo-ray score first"):
        check_scored(str(work["prep"]), needs=["oracle_chosen"])


def test_fingerprints_are_content_based(work, tmp_path):
    import shutil

    assert fingerprint(str(work["oracle1"])) == fingerprint(str(work["oracle1"]))
    assert fingerprint(str(work["oracle1"])) != fingerprint(str(work["oracle2"]))  # only the head differs
    assert fingerprint(str(work["oracle1"])) != fingerprint(str(work["model"]))
    copy = shutil.copytree(work["prep"], tmp_path / "copy")
    assert fingerprint(str(copy)) == fingerprint(str(work["prep"]))  # content, not location
    assert fingerprint("facebook/opt-350m") == "hub:facebook/opt-350m"
    with pytest.raises(UserError, match="does not exist"):
        fingerprint(str(tmp_path / "nope"))


def test_bad_inputs_are_user_errors(work, tmp_path):
    oracle = str(work["oracle1"])
    with pytest.raises(UserError, match="at least one --oracle or a --reference"):
        _score(data=work["prep"], out=tmp_path / "o")
    with pytest.raises(UserError, match="does not exist"):
        _score(data=tmp_path / "missing", out=tmp_path / "o", oracles=[oracle])
    with pytest.raises(UserError, match="does not exist"):
        _score(data=work["prep"], out=tmp_path / "o", oracles=[str(tmp_path / "no-oracle")])
    with pytest.raises(UserError, match=r"not an Oracle \(no reward head"):
        _score(data=work["prep"], out=tmp_path / "o", oracles=[str(work["model"])])

    # The same rows prepared without --tokenizer: text only.
    untokenized = tmp_path / "text-only"
    (untokenized / "data").mkdir(parents=True)
    (untokenized / "stats.json").write_bytes((work["prep"] / "stats.json").read_bytes())
    table = pq.read_table(work["prep"] / "data").drop_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    pq.write_table(table, untokenized / "data" / "part.parquet")
    with pytest.raises(UserError, match="--tokenizer"):
        _score(data=untokenized, out=tmp_path / "o", oracles=[oracle])


def test_cli_score(work, scored_sum, capsys):
    provenance = json.loads((scored_sum / "scoring.json").read_text())  # written by main(["score", ...])
    assert provenance["batch_size"] == 32 and provenance["num_gpus_per_actor"] == 0
    assert provenance["columns_added"] == ["oracle_chosen", "oracle_rejected", *REF_COLUMNS]

    code = main(
        [
            "score",
            "--data",
            str(work["prep"]),
            "--oracle",
            str(work["model"]),
            "--out",
            str(work["root"] / "bad"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "not an Oracle (no reward head" in err


def test_job_entry_point(tmp_path):
    # As `ray job submit --working-dir .` runs it: `python jobs/score.py` from the repo root.
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--help"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--oracle" in result.stdout and "--reference" in result.stdout


def test_an_impossible_actor_pool_fails_before_reading_rows(work, tmp_path, monkeypatch):
    """A GPU per actor on the CPU-only test cluster: one-line UserError, no output written."""
    monkeypatch.setenv("DRDO_RAY_AUTOSCALING", "0")
    out = tmp_path / "scored"
    with pytest.raises(UserError, match=r"needs \{CPU: 1, GPU: 1\}.*the cluster has \{CPU: 4, GPU: 0\}"):
        _score(data=work["prep"], out=out, oracles=[str(work["oracle1"])], num_gpus_per_actor=1)
    assert not out.exists()


def test_an_autoscaling_cluster_is_waited_for_no_longer_than_startup_timeout(work, tmp_path, monkeypatch):
    """Told the cluster can add nodes, score asks for them and gives up at --startup-timeout:
    one line naming the request and the limit, no output written, no request left behind."""
    import time

    import ray

    monkeypatch.setenv("DRDO_RAY_AUTOSCALING", "1")
    out = tmp_path / "scored"
    began = time.monotonic()
    with pytest.raises(UserError, match=r"needs \{CPU: 1, GPU: 1\}.*came up within 3s \(--startup-timeout\)"):
        _score(
            data=work["prep"],
            out=out,
            oracles=[str(work["oracle1"])],
            num_gpus_per_actor=1,
            startup_timeout=3,
        )
    assert time.monotonic() - began < 3 + 20
    assert not out.exists()
    # The placement group that asked for the nodes is gone with the wait.
    assert all(g["state"] == "REMOVED" for g in ray.util.placement_group_table().values())
