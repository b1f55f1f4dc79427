"""The training loop called directly, without Ray: every alignment loss (and the ablations)
runs through the same loop, updates the parameters it should, and a checkpoint written
mid-run restores to the same state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from interrupted_run import checkpoint_then_die

from drdo_ray.config import TrainConfig
from drdo_ray.losses import ALIGN_LOSSES
from drdo_ray.train.batches import Collator
from drdo_ray.train.diagnostics import DRDO_TERMS
from drdo_ray.train.engine import World
from drdo_ray.train.loop import load_model, run, uses_reward_head


class Collect:
    def __init__(self) -> None:
        self.reports: list[tuple[dict, Path | None]] = []
        self.saved: list[set[str]] = []

    def report(self, metrics, checkpoint_dir):
        self.reports.append((metrics, checkpoint_dir))
        if checkpoint_dir is not None:
            self.saved.append({p.name for p in Path(checkpoint_dir).iterdir()})


EXTRA = {
    "drdo": ("oracle_chosen", "oracle_rejected"),
    "drdo_minus_c": ("oracle_chosen", "oracle_rejected"),
    "drdo_minus_r": (),
    "dpo": ("ref_chosen_logps", "ref_rejected_logps"),
    "dpo_plus_c": ("ref_chosen_logps", "ref_rejected_logps"),
    "ipo": ("ref_chosen_logps", "ref_rejected_logps"),
    "edpo": ("ref_chosen_logps", "ref_rejected_logps", "oracle_chosen", "oracle_rejected"),
}


def _cfg(tiny_model_dir, **kw) -> TrainConfig:
    base = dict(
        stage="align",
        model=str(tiny_model_dir),
        data="unused",
        run_dir="unused",
        micro_batch_size=2,
        num_workers=1,
        max_steps=4,
        lr=5e-3,
        weight_decay=0.0,
        checkpoint_every=2,
    )
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize("loss", ALIGN_LOSSES)
def test_every_loss_trains_through_the_one_loop(pair_columns, tiny_model_dir, tmp_path, loss):
    columns, pad = pair_columns
    collate = Collator(pad_id=pad, pairs=True, extra=EXTRA[loss], edpo_oracles=3 if loss == "edpo" else 0)
    feed = [collate({k: v[i : i + 2] for k, v in columns.items()}) for i in (0, 2)]
    cfg = _cfg(tiny_model_dir, loss=loss)
    before = {k: v.clone() for k, v in load_model(cfg).state_dict().items()}
    exported = {}
    sink = Collect()
    final = run(
        cfg,
        batches=lambda epoch: feed,
        num_rows=4,
        world=World(),
        reporter=sink,
        metrics_dir=tmp_path,
        export=lambda model, engine: exported.update(model.state_dict()),
    )
    assert (final["status"], final["global_step"], final["consumed_samples"]) == ("finished", 4, 8)
    assert np.isfinite(final["loss"])
    changed = [k for k in before if not torch.equal(before[k], exported[k])]
    frozen = {"reward_head.bias"}  # reward differences give the bias no gradient; it is frozen
    if loss == "drdo_minus_c":
        frozen.add("lm.lm_head.weight")  # distillation alone never reads the logits
    assert set(before) - set(changed) == (frozen & set(before))
    assert ("reward_head.weight" in before) == uses_reward_head(cfg) == (loss in ("drdo", "drdo_minus_c"))
    assert [m.get("global_step") for m, c in sink.reports if c is not None] == [2, 4]
    assert all({"trainer_state.json", "rng_rank0.pt", "torch_state.pt"} <= saved for saved in sink.saved)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # per-term trunk gradients are logged for the DRDO family only
    for row in rows:
        assert ("term_grad_norm_distill" in row) == (loss in DRDO_TERMS)
        if loss in DRDO_TERMS:
            assert (row["term_grad_norm_distill"] > 0) == (loss != "drdo_minus_r")
            assert (row["term_grad_norm_contrastive"] > 0) == (loss != "drdo_minus_c")
            assert math.isfinite(row["term_grad_cosine"]) == (loss == "drdo")


@pytest.mark.parametrize(
    ("chunk", "wrt", "checkpointing"), [(None, "hidden", False), (5, "hidden", False), (None, "params", True)]
)
def test_term_gradient_diagnostics_leave_training_unchanged(
    pair_columns, tiny_model_dir, tmp_path, chunk, wrt, checkpointing
):
    """The diagnostics' autograd.grad(retain_graph=True) on logging micro-batches must not alter the
    step: the same weights with them on and off (grad_accum 2, logged every other step)."""
    columns, pad = pair_columns
    collate = Collator(pad_id=pad, pairs=True, extra=EXTRA["drdo"])
    feed = [collate({k: v[i : i + 1] for k, v in columns.items()}) for i in range(4)]
    exported: dict[bool, dict] = {True: {}, False: {}}
    for on in (True, False):
        cfg = _cfg(
            tiny_model_dir,
            loss="drdo",
            micro_batch_size=1,
            grad_accum=2,
            log_every=2,
            checkpoint_every=0,
            shuffle=False,
            term_grads=on,
            term_grads_wrt=wrt,
            logps_chunk_size=chunk,
            gradient_checkpointing=checkpointing,
        )
        run(
            cfg,
            batches=lambda epoch: feed,
            num_rows=4,
            world=World(),
            metrics_dir=tmp_path / str(on),
            export=lambda m, e, on=on: exported[on].update({k: v.clone() for k, v in m.state_dict().items()}),
        )
        rows = [json.loads(line) for line in (tmp_path / str(on) / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [2, 4]
        assert all(("term_grad_cosine" in r) == on for r in rows)
        if on:  # the cosine is 0 by construction on the hidden states, not on the parameters
            assert all((r["term_grad_cosine"] == 0.0) == (wrt == "hidden") for r in rows)
    for name, value in exported[False].items():
        assert torch.equal(exported[True][name], value), name


@pytest.mark.parametrize("clip", [1e9, 1e-3])
def test_detach_trains_the_lm_exactly_as_drdo_minus_r_up_to_clipping(
    pair_columns, tiny_model_dir, tmp_path, clip
):
    """With distill_trunk=detach the distillation term trains the reward head only, so the LM's update
    is DRDO(-R)'s: the exported LMs are bit-identical when the global grad-norm clip never binds, and differ
    when it does (the head's gradient then shrinks the LM's step). Why bench quality reports DRDO(-R)
    and not a separate detach row."""
    columns, pad = pair_columns
    exported: dict[str, dict] = {}
    for loss, extra in (("drdo", EXTRA["drdo"]), ("drdo_minus_r", ())):
        collate = Collator(pad_id=pad, pairs=True, extra=extra)
        feed = [collate({k: v[i : i + 2] for k, v in columns.items()}) for i in (0, 2)]
        cfg = _cfg(tiny_model_dir, loss=loss, distill_trunk="detach", max_grad_norm=clip, checkpoint_every=0)
        run(
            cfg,
            batches=lambda epoch, feed=feed: feed,
            num_rows=4,
            world=World(),
            metrics_dir=tmp_path / f"{loss}-{clip}",
            export=lambda m, e, loss=loss: exported.update(
                {loss: {k: v.clone() for k, v in m.state_dict().items()}}
            ),
        )
    lm = {k.removeprefix("lm."): v for k, v in exported["drdo"].items() if k.startswith("lm.")}
    assert set(lm) == set(exported["drdo_minus_r"])
    differ = [
        k for k, v in exported["drdo_minus_r"].items() if not torch.allclose(lm[k], v, rtol=0, atol=1e-6)
    ]
    assert (differ == []) == (clip > 1)


def test_restore_continues_where_the_checkpoint_left_off(pair_columns, tiny_model_dir, tmp_path):
    columns, pad = pair_columns
    collate = Collator(pad_id=pad, pairs=True, extra=EXTRA["drdo"])
    feed = [collate({k: v[i : i + 2] for k, v in columns.items()}) for i in (0, 2)]
    cfg = _cfg(tiny_model_dir, loss="drdo", shuffle=False)
    full: dict = {}
    run(
        cfg,
        batches=lambda e: feed,
        num_rows=4,
        world=World(),
        reporter=Collect(),
        export=lambda m, e: full.update({k: v.clone() for k, v in m.state_dict().items()}),
    )

    checkpoint_then_die(cfg, feed, 4, 2, tmp_path / "ckpt")
    resumed: dict = {}
    final = run(
        cfg,
        batches=lambda e: feed,
        num_rows=4,
        world=World(),
        reporter=Collect(),
        restore_dir=tmp_path / "ckpt",
        export=lambda m, e: resumed.update(m.state_dict()),
    )
    assert (final["global_step"], final["consumed_samples"]) == (4, 8)
    for name, value in full.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-7)


def test_a_restored_run_trains_every_row_once(pair_columns, tiny_model_dir, tmp_path):
    """With trace_rows, the rows a run trained on are recorded per step; a run that fails after
    its checkpoint and resumes from it trains on the same rows as an unbroken one, none twice
    (the micro-batches redone after the restart replace the failed attempt's lines)."""
    from drdo_ray.train.row_trace import traced_rows

    columns, pad = pair_columns
    collate = Collator(pad_id=pad, pairs=True, extra=EXTRA["drdo"])
    feed = [collate({k: v[i : i + 1] for k, v in columns.items()}) for i in range(4)]
    cfg = _cfg(tiny_model_dir, loss="drdo", shuffle=False, micro_batch_size=1, max_steps=6, trace_rows=True)
    common = dict(batches=lambda e: feed, num_rows=4, world=World())
    run(cfg, **common, reporter=Collect(), metrics_dir=tmp_path / "full")

    class KeepCheckpoint(Collect):
        def report(self, metrics, checkpoint_dir):
            if checkpoint_dir is not None and metrics["global_step"] == 4:
                import shutil

                shutil.copytree(checkpoint_dir, tmp_path / "ckpt")

    broken = tmp_path / "broken"
    failure = dict(metrics_dir=broken, failure_marker=tmp_path / "failed")
    with pytest.raises(RuntimeError, match="injected failure at step 5"):
        run(cfg.model_copy(update={"fail_at_step": 5}), **common, reporter=KeepCheckpoint(), **failure)
    assert max(json.loads(x)["step"] for x in (broken / "rows-rank-0.jsonl").read_text().splitlines()) == 5
    final = run(cfg, **common, reporter=Collect(), restore_dir=tmp_path / "ckpt", metrics_dir=broken)
    assert (final["global_step"], final["consumed_samples"]) == (6, 6)
    full, resumed = traced_rows(tmp_path / "full"), traced_rows(broken)
    assert resumed == full and len(full) == 6  # 4 rows in epoch 0, the first 2 again in epoch 1
    assert sorted({epoch for epoch, _ in full}) == [0, 1] and len(set(full)) == 6
    steps = [json.loads(x)["step"] for x in (broken / "rows-rank-0.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 5's micro-batch once, as redone after the restore


@pytest.mark.parametrize("stage,loss", [("sft", None), ("align", "drdo")])
def test_load_model_gives_float32_masters_from_a_half_precision_checkpoint(
    tiny_model_dir, tmp_path, stage, loss
):
    """transformers 5 loads a checkpoint in its saved dtype ("auto"): a float16 hub model would
    otherwise train in float16 under the plain torch engine."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16).save_pretrained(tmp_path)
    model = load_model(_cfg(tiny_model_dir, stage=stage, loss=loss, model=str(tmp_path)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
