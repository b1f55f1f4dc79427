"""Training on Ray Train: SFT -> Oracle -> score -> align (DRDO on DeepSpeed ZeRO-2, DPO on
torch DDP), each with 2 CPU workers; kill-and-resume; a rerun resumes instead of restarting;
non-finite losses; every invalid config fails before a worker starts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from drdo_ray.config import PrepareConfig, ScoreConfig, TrainConfig
from drdo_ray.errors import UserError
from drdo_ray.train.ray_trainer import fit, fit_oracles, model_dir, validate

ROWS = 32  # 2 workers x micro-batch 4 -> 4 optimizer steps per epoch


def _metrics(summary: dict) -> list[dict]:
    return [
        json.loads(line) for line in (Path(summary["train_dir"]) / "metrics.jsonl").read_text().splitlines()
    ]


def _epoch_losses(rows: list[dict], steps_per_epoch: int = 4) -> list[float]:
    by_epoch: dict[int, list[float]] = {}
    for row in rows:
        by_epoch.setdefault((row["step"] - 1) // steps_per_epoch, []).append(row["loss"])
    return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


def _weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _train(tmp: Path, **kw) -> TrainConfig:
    base = dict(
        run_dir=str(tmp / "run"),
        micro_batch_size=4,
        grad_accum=1,
        num_workers=2,
        lr=2e-3,
        warmup_steps=0,
        weight_decay=0.0,
        checkpoint_every=4,
        max_steps=12,
        log_every=1,
    )
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, ray_session, tiny_model_dir):
    """Runs the whole stage chain once; the tests below read its artifacts."""
    from drdo_ray.data.prepare import prepare
    from drdo_ray.data.readers import sample_path
    from drdo_ray.data.sources import SOURCES
    from drdo_ray.scoring import score

    tmp = tmp_path_factory.mktemp("pipeline")
    lines = sample_path(SOURCES["ultrafeedback"]).read_text().splitlines()[:ROWS]
    (tmp / "uf.jsonl").write_text("\n".join(lines) + "\n")
    prepare(
        PrepareConfig(
            source="ultrafeedback",
            input=str(tmp / "uf.jsonl"),
            out=str(tmp / "data"),
            tokenizer=str(tiny_model_dir),
        )
    )
    out: dict = {"tmp": tmp, "base": tiny_model_dir}
    out["sft"] = fit(_train(tmp, stage="sft", model=str(tiny_model_dir), data=str(tmp / "data")))
    out["oracle"] = fit_oracles(
        _train(
            tmp,
            stage="oracle",
            model=out["sft"]["model"],
            data=str(tmp / "data"),
            deepspeed={"enabled": True, "zero_stage": 2},
        )
    )[0]
    score(
        ScoreConfig(
            data=str(tmp / "data"),
            out=str(tmp / "scored"),
            oracles=[out["oracle"]["model"]],
            reference=out["sft"]["model"],
            reduction="sum",
        )
    )
    out["drdo"] = fit(
        _train(
            tmp,
            stage="align",
            loss="drdo",
            model=out["sft"]["model"],
            data=str(tmp / "scored"),
            deepspeed={"enabled": True, "zero_stage": 2},
        )
    )
    out["dpo"] = fit(
        _train(tmp, stage="align", loss="dpo", model=out["sft"]["model"], data=str(tmp / "scored"))
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "oracle", "drdo", "dpo"])
def test_loss_falls_over_epochs(pipeline, stage):
    rows = _metrics(pipeline[stage])
    assert [r["step"] for r in rows] == list(range(1, 13))
    epochs = _epoch_losses(rows)
    assert epochs[-1] < epochs[0], f"{stage}: per-epoch mean loss {epochs}"
    assert rows[-1]["consumed_samples"] == 12 * 8


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "start"), [("sft", "base"), ("drdo", "sft"), ("dpo", "sft")])
def test_every_parameter_changed(pipeline, stage, start):
    before = _weights(pipeline[start] if start == "base" else pipeline[start]["model"])
    after = _weights(pipeline[stage]["model"])
    assert before.keys() == after.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []


@pytest.mark.slow
def test_reward_head_only_where_it_belongs(pipeline):
    from transformers import AutoModelForCausalLM

    oracle = Path(pipeline["oracle"]["model"])
    assert (oracle / "reward_head.safetensors").exists()  # the Oracle keeps its head
    for stage in ("sft", "drdo", "dpo"):  # exported policies have none, and reload as plain LMs
        folder = Path(pipeline[stage]["model"])
        assert not (folder / "reward_head.safetensors").exists()
        assert AutoModelForCausalLM.from_pretrained(folder).config.vocab_size > 0
    # Training checkpoints: DRDO's (DeepSpeed) holds the head; DPO's (torch) does not.
    drdo_states = torch.load(
        next(Path(pipeline["drdo"]["checkpoint"]).rglob("mp_rank_00_model_states.pt")), weights_only=False
    )["module"]
    assert any(k.startswith("reward_head.") for k in drdo_states)
    dpo_state = torch.load(Path(pipeline["dpo"]["checkpoint"]) / "torch_state.pt", weights_only=False)[
        "model"
    ]
    assert not any("reward_head" in k for k in dpo_state)
    # The DRDO head learned: its weights moved away from the seeded initialization.
    from drdo_ray.models import PolicyWithRewardHead

    fresh = PolicyWithRewardHead.from_pretrained(pipeline["sft"]["model"], head_seed=0)
    assert not torch.allclose(fresh.reward_head.weight.float(), drdo_states["reward_head.weight"].float())


@pytest.mark.slow
def test_drdo_logs_its_term_gradients_on_deepspeed_workers(pipeline):
    """DRDO ran on DeepSpeed ZeRO-2 with 2 workers: the per-term trunk gradients are logged
    (averaged over workers) at every step; DPO has no such terms."""
    for row in _metrics(pipeline["drdo"]):
        assert row["term_grad_norm_distill"] > 0 and row["term_grad_norm_contrastive"] > 0
        assert -1.0 <= row["term_grad_cosine"] <= 1.0
    assert not any("term_grad_cosine" in row for row in _metrics(pipeline["dpo"]))


@pytest.mark.slow
def test_killed_worker_resumes_to_the_same_result(pipeline):
    tmp = pipeline["tmp"]
    common = dict(
        stage="align",
        loss="drdo",
        model=pipeline["sft"]["model"],
        data=str(tmp / "scored"),
        checkpoint_every=2,
        max_steps=6,
        max_failures=1,
    )
    clean = fit(_train(tmp, name="resume-clean", **common))
    broken = fit(_train(tmp, name="resume-killed", fail_at_step=3, **common))
    assert (Path(broken["train_dir"]) / ".injected_failure").exists()  # it really failed once
    for key in ("global_step", "consumed_samples", "status"):
        assert broken["metrics"][key] == clean["metrics"][key]
    assert [r["step"] for r in _metrics(broken)] == list(range(1, 7))  # redone steps logged once
    a, b = _weights(clean["model"]), _weights(broken["model"])
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)

    # A rerun with the same name resumes from the final checkpoint instead of starting over.
    again = fit(_train(tmp, name="resume-clean", **common))
    assert again["metrics"]["global_step"] == 6
    assert len(_metrics(again)) == 6


@pytest.mark.slow
def test_non_finite_losses_are_skipped_then_stop_the_run(pipeline):
    tmp = pipeline["tmp"]
    scored = tmp / "scored"
    table = pq.read_table(scored / "data")
    for name, rows_bad in (("partly_nan", range(0, ROWS, 8)), ("all_nan", range(ROWS))):
        folder = tmp / name
        (folder / "data").mkdir(parents=True)
        column = table["oracle_chosen"].to_pylist()
        for i in rows_bad:
            column[i] = float("nan")
        pq.write_table(
            table.set_column(table.schema.get_field_index("oracle_chosen"), "oracle_chosen", [column]),
            folder / "data" / "part.parquet",
        )
        for meta in ("scoring.json", "source_stats.json"):
            if (scored / meta).exists():
                (folder / meta).write_text((scored / meta).read_text())
    common = dict(stage="align", loss="drdo", model=pipeline["sft"]["model"], max_steps=4, shuffle=False)
    partly = fit(_train(tmp, data=str(tmp / "partly_nan"), name="nan-some", max_bad_steps=3, **common))
    assert partly["metrics"]["status"] == "finished" and partly["metrics"]["bad_steps"] >= 1
    with pytest.raises(UserError, match="non-finite"):
        fit(_train(tmp, data=str(tmp / "all_nan"), name="nan-all", max_bad_steps=2, **common))


# ---------------------------------------------------------------- fails before any worker


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_session, tiny_model_dir):
    from drdo_ray.data.prepare import prepare

    tmp = tmp_path_factory.mktemp("prepared")
    prepare(
        PrepareConfig(
            source="ultrafeedback", input="sample", out=str(tmp / "data"), tokenizer=str(tiny_model_dir)
        )
    )
    prepare(PrepareConfig(source="ultrafeedback", input="sample", out=str(tmp / "text")))
    return tmp


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stage": "align"}, "needs --loss"),
        ({"stage": "align", "loss": "drdo"}, "not a scored dataset"),
        ({"stage": "align", "loss": "dpo"}, "not a scored dataset"),
        ({"global_batch_size": 7}, "global_batch_size 7"),
        ({"max_steps": 1, "micro_batch_size": 400}, "cannot fill one optimizer step"),
        ({"data": "TEXT"}, "no token columns"),
        ({"data": "/no/such/dir"}, "holds no data/ folder"),
        ({"model": "no-such-model"}, "model not found"),
    ],
)
def test_invalid_configs_fail_before_workers_start(prepared, tiny_model_dir, overrides, message):
    data = str(prepared / "data")
    overrides = dict(overrides)
    if overrides.get("data") == "TEXT":
        overrides["data"] = str(prepared / "text")
    cfg = TrainConfig(
        **(
            {"stage": "oracle", "model": str(tiny_model_dir), "data": data, "run_dir": "/tmp/unused"}
            | overrides
        )
    )
    with pytest.raises(UserError, match=message):
        validate(cfg)


def test_a_lora_run_refuses_a_live_reference_other_than_its_base(prepared, tiny_model_dir, tmp_path):
    """With LoRA the live reference is the policy's base read with its adapters off: another model
    (here a copy of the same weights elsewhere) is refused before any worker starts; the base
    itself, given by a path that differs only in spelling, is accepted."""
    import shutil

    pytest.importorskip("peft")
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    common = dict(stage="align", loss="dpo", model=str(tiny_model_dir), data=str(prepared / "data"))
    cfg = TrainConfig(run_dir=str(tmp_path), lora={"enabled": True}, live_reference=str(other), **common)
    with pytest.raises(UserError, match="live_reference must be the model the run starts from"):
        validate(cfg)
    same = cfg.model_copy(update={"live_reference": f"{tiny_model_dir}/../{Path(tiny_model_dir).name}"})
    checked, _ = validate(same)
    assert checked.live_reference == checked.model


def test_a_relative_run_dir_reaches_the_workers_absolute(prepared, tiny_model_dir, tmp_path, monkeypatch):
    """`--run-dir runs/run1` (the documented quick start) looks like a hub id but is a folder: the
    workers, whose working directory is not the driver's, get it absolute, so the exported model
    lands under the run directory and not in Ray's session folder."""
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(
        stage="oracle", model=str(tiny_model_dir), data=str(prepared / "data"), run_dir="runs/run1"
    )
    checked, _ = validate(cfg)
    assert checked.run_dir == str(tmp_path / "runs" / "run1")
    assert model_dir(checked) == str(tmp_path / "runs" / "run1" / "models" / "oracle")


def test_unknown_loss_is_rejected_by_the_schema(tiny_model_dir):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="loss"):
        TrainConfig(stage="align", loss="ppo", model=str(tiny_model_dir), data="x", run_dir="y")
