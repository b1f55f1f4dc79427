"""DRDO's distillation-term options on a tiny model: ``distill_weight`` (λ) and
``distill_trunk`` (full / detach / scaled:<f>: how much of the distillation gradient reaches
the LM trunk; the reward head always gets all of it); and the per-term gradient diagnostics
on the trunk output that measure it."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from drdo_ray.config import TrainConfig, load_config
from drdo_ray.data.tokenize import encode_prompt, encode_response
from drdo_ray.errors import UserError
from drdo_ray.loss_settings import DistillTrunk
from drdo_ray.losses import drdo_loss
from drdo_ray.models import collate_pairs, pair_forward, scale_grad
from drdo_ray.train.diagnostics import term_gradients, term_grads_apply
from drdo_ray.train.loop import load_model

PAIRS = [
    ("Name a fruit.", "An apple.", "A chair, a chair, a chair."),
    ("Say hello.", "Hello there!", "Goodbye forever and ever."),
    ("Count to three.", "One, two, three.", "Seven."),
]
HEAD = "reward_head.weight"


@pytest.fixture(scope="module")
def batch(tiny_model_dir) -> dict[str, torch.Tensor]:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = collate_pairs(
        [encode_prompt(tok, p, chat=True) for p, _, _ in PAIRS],
        [encode_response(tok, c) for _, c, _ in PAIRS],
        [encode_response(tok, r) for _, _, r in PAIRS],
        pad_id=tok.pad_token_id,
    )
    out["oracle_chosen"] = torch.tensor([1.5, 0.3, 2.0])
    out["oracle_rejected"] = torch.tensor([-1.0, 0.8, -0.5])
    return out


def _cfg(tiny_model_dir, **kw) -> TrainConfig:
    base = dict(stage="align", loss="drdo", model=str(tiny_model_dir), data="unused", run_dir="unused")
    return TrainConfig(**(base | kw))


def _grads(cfg: TrainConfig, batch, **loss_kw) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Gradients of every trainable parameter (zeros where none arrived), the loss and the rewards."""
    model = load_model(cfg)
    pair = pair_forward(model, batch, reduction="mean")
    loss, _ = drdo_loss(
        pair.chosen_logps,
        pair.rejected_logps,
        pair.chosen_rewards,
        pair.rejected_rewards,
        batch["oracle_chosen"],
        batch["oracle_rejected"],
        **loss_kw,
    )
    loss.backward()
    grads = {
        n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    rewards = torch.cat([pair.chosen_rewards, pair.rejected_rewards]).detach()
    return grads, loss.detach(), rewards


def _trunk(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: g for n, g in grads.items() if n.startswith("lm.")}


def test_scale_grad_keeps_the_value_and_scales_the_gradient() -> None:
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64)
    for factor in (0.0, 0.3, 1.0, 2.5):
        y = scale_grad(x, factor)
        assert torch.equal(y, x)
        if factor == 0.0:
            assert not y.requires_grad  # a plain detach: no graph behind it
            continue
        (g,) = torch.autograd.grad((y @ w).sum(), x, allow_unused=True, materialize_grads=True)
        torch.testing.assert_close(g, factor * w.expand(4, 8), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="factor"):
        scale_grad(x, -1.0)


def test_detach_zeroes_the_trunk_gradient_of_distillation_and_keeps_the_heads(tiny_model_dir, batch) -> None:
    full, full_loss, full_rewards = _grads(_cfg(tiny_model_dir), batch, contrastive=False)
    detached, loss, rewards = _grads(_cfg(tiny_model_dir, distill_trunk="detach"), batch, contrastive=False)
    assert torch.equal(loss, full_loss) and torch.equal(rewards, full_rewards)
    assert any(g.abs().sum() > 0 for g in _trunk(full).values())
    assert all(torch.count_nonzero(g) == 0 for g in _trunk(detached).values())
    assert torch.count_nonzero(full[HEAD]) > 0
    assert torch.equal(detached[HEAD], full[HEAD])


def test_scaled_multiplies_the_trunk_gradient_of_distillation(tiny_model_dir, batch) -> None:
    full, _, _ = _grads(_cfg(tiny_model_dir), batch, contrastive=False)
    half, _, _ = _grads(_cfg(tiny_model_dir, distill_trunk="scaled:0.5"), batch, contrastive=False)
    for name, g in _trunk(full).items():
        torch.testing.assert_close(half[name], 0.5 * g, rtol=1e-6, atol=1e-12)
    assert torch.equal(half[HEAD], full[HEAD])


@pytest.mark.parametrize("mode", ["detach", "scaled:0.5"])
def test_contrastive_gradients_do_not_depend_on_the_mode(tiny_model_dir, batch, mode) -> None:
    full, _, _ = _grads(_cfg(tiny_model_dir), batch, distill=False)
    other, _, _ = _grads(_cfg(tiny_model_dir, distill_trunk=mode), batch, distill=False)
    assert any(g.abs().sum() > 0 for g in _trunk(full).values())
    for name, g in full.items():
        assert torch.equal(other[name], g), name


def test_detach_leaves_the_trunk_only_the_contrastive_gradient(tiny_model_dir, batch) -> None:
    contrastive, _, _ = _grads(_cfg(tiny_model_dir), batch, distill=False)
    distill, _, _ = _grads(_cfg(tiny_model_dir), batch, contrastive=False)
    both, _, _ = _grads(_cfg(tiny_model_dir, distill_trunk="detach"), batch)
    for name, g in _trunk(contrastive).items():
        torch.testing.assert_close(both[name], g, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(both[HEAD], distill[HEAD], rtol=1e-6, atol=1e-10)


def test_distill_weight_scales_the_distillation_contribution(tiny_model_dir, batch) -> None:
    # λ = 0.25 is a power of two, so float32 scaling is exact and the comparison can be tight
    one, loss_one, _ = _grads(_cfg(tiny_model_dir), batch, contrastive=False)
    quarter, loss_quarter, _ = _grads(_cfg(tiny_model_dir), batch, contrastive=False, distill_weight=0.25)
    torch.testing.assert_close(loss_quarter, 0.25 * loss_one, rtol=1e-6, atol=0)
    assert any(g.abs().sum() > 0 for g in _trunk(one).values())
    for name, g in one.items():
        torch.testing.assert_close(quarter[name], 0.25 * g, rtol=1e-6, atol=1e-12)


def test_trunk_scale_applies_to_the_align_stage_only(tiny_model_dir) -> None:
    assert load_model(_cfg(tiny_model_dir, distill_trunk="scaled:0.25")).trunk_grad_scale == 0.25
    assert load_model(_cfg(tiny_model_dir, distill_trunk="detach")).trunk_grad_scale == 0.0
    assert load_model(_cfg(tiny_model_dir, stage="oracle", loss=None)).trunk_grad_scale == 1.0
    with pytest.raises(
        ValueError, match="distill_trunk belongs to the align losses drdo, drdo_minus_r, drdo_minus_c"
    ):
        _cfg(tiny_model_dir, stage="oracle", loss=None, distill_trunk="detach")


def test_distill_options_are_validated(tiny_model_dir) -> None:
    modes = ("full", "detach", "scaled:0.5", "scaled:0", "scaled:2")
    assert [DistillTrunk.parse(m).scale for m in modes] == [1.0, 0.0, 0.5, 0.0, 2.0]
    base = dict(stage="align", loss="drdo", model=str(tiny_model_dir), data="d", run_dir="r")
    cfg = load_config(TrainConfig, flags=base, overrides=["distill_trunk=scaled:0.5", "distill_weight=0.05"])
    # A typed value inside, the text it was given as outside (drdo_training.json, the plans).
    assert (cfg.distill_trunk, cfg.distill_weight) == (DistillTrunk("scaled", 0.5), 0.05)
    assert cfg.model_dump()["distill_trunk"] == cfg.model_dump(mode="json")["distill_trunk"] == "scaled:0.5"
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg
    assert (str(TrainConfig(**base).distill_trunk), TrainConfig(**base).distill_weight) == ("full", 1.0)
    with pytest.raises(ValueError, match="distill_trunk"):
        DistillTrunk.parse("scaled:")
    for bad in ("half", "scaled:x", "scaled:-1", "scaled:inf", "scaled:nan", "detach:0.5", "scaled:"):
        with pytest.raises(UserError, match="distill_trunk must be 'full', 'detach' or 'scaled:<f>'"):
            load_config(TrainConfig, flags=base, overrides=[f"distill_trunk={bad}"])
    with pytest.raises(UserError, match="distill_weight"):
        load_config(TrainConfig, flags=base, overrides=["distill_weight=-1"])
    with pytest.raises(UserError, match="reward head only"):
        load_config(TrainConfig, flags=base | {"loss": "drdo_minus_c"}, overrides=["distill_trunk=detach"])


# ------------------------------------------------------------------------------ diagnostics


def _hand_term_grads(cfg: TrainConfig, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each weighted term written out by hand, its gradient on hidden_states[-1] by backward()."""
    grads = []
    for term in ("distill", "contrastive"):
        model = load_model(cfg)
        pair = pair_forward(model, batch, reduction="mean", keep_hidden=True)
        pair.hidden.retain_grad()
        zw, zl = pair.chosen_logps, pair.rejected_logps
        if term == "distill":
            oracle_margin = batch["oracle_chosen"] - batch["oracle_rejected"]
            rows = cfg.distill_weight * (oracle_margin - (pair.chosen_rewards - pair.rejected_rewards)) ** 2
        else:
            focal = (1 - torch.sigmoid(zw - zl)) ** cfg.gamma
            rows = -cfg.alpha * focal * (zw - torch.log(1 - torch.exp(zl)))
        rows.mean().backward()
        grads.append(pair.hidden.grad.flatten().double())
    return grads[0], grads[1]


def test_term_gradients_match_a_hand_computation(tiny_model_dir, batch) -> None:
    cfg = _cfg(tiny_model_dir, distill_weight=0.3, alpha=0.5)
    d, c = _hand_term_grads(cfg, batch)
    model = load_model(cfg)
    got = term_gradients(model, batch, cfg)
    assert set(got) == {"term_grad_norm_distill", "term_grad_norm_contrastive", "term_grad_cosine"}
    assert got["term_grad_norm_distill"] == pytest.approx(float(d.norm()), rel=1e-4)
    assert got["term_grad_norm_contrastive"] == pytest.approx(float(c.norm()), rel=1e-4)
    assert got["term_grad_norm_distill"] > 0 and got["term_grad_norm_contrastive"] > 0
    # On the trunk output the two pulls live on disjoint positions (the reward head reads the last
    # real token, whose logits score no response token): the cosine is exactly 0 there.
    assert float(d @ c) == 0.0 and got["term_grad_cosine"] == 0.0
    assert all(p.grad is None for p in model.parameters())  # measured, not accumulated


def _hand_param_grads(cfg: TrainConfig, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each term's gradient on the trunk parameters (all LM parameters but an untied output
    embedding) by plain backward() through drdo_loss with the other term off."""
    grads = []
    for flags in ({"contrastive": False}, {"distill": False}):
        every, _, _ = _grads(cfg, batch, alpha=cfg.alpha, distill_weight=cfg.distill_weight, **flags)
        # named_parameters lists a tied output embedding once, under the input embedding's name
        trunk = [g for n, g in _trunk(every).items() if not n.startswith("lm.lm_head")]
        grads.append(torch.cat([g.flatten() for g in trunk]).double())
    return grads[0], grads[1]


def test_term_gradients_on_the_trunk_parameters_match_a_hand_computation(tiny_model_dir, batch) -> None:
    cfg = _cfg(tiny_model_dir, distill_weight=0.3, alpha=0.5, term_grads_wrt="params")
    d, c = _hand_param_grads(cfg, batch)
    model = load_model(cfg)
    got = term_gradients(model, batch, cfg)
    assert got["term_grad_norm_distill"] == pytest.approx(float(d.norm()), rel=1e-4)
    assert got["term_grad_norm_contrastive"] == pytest.approx(float(c.norm()), rel=1e-4)
    cosine = float(d @ c / (d.norm() * c.norm()))
    assert cosine != 0.0 and got["term_grad_cosine"] == pytest.approx(cosine, rel=1e-3, abs=1e-5)
    assert all(p.grad is None for p in model.parameters())
    cfg = _cfg(tiny_model_dir, distill_trunk="detach", term_grads_wrt="params")
    detached = term_gradients(load_model(cfg), batch, cfg)
    assert detached["term_grad_norm_distill"] == 0.0 and math.isnan(detached["term_grad_cosine"])
    cfg = _cfg(
        tiny_model_dir, distill_trunk="scaled:0.5", distill_weight=0.3, alpha=0.5, term_grads_wrt="params"
    )
    half = term_gradients(load_model(cfg), batch, cfg)
    assert half["term_grad_norm_distill"] == pytest.approx(0.5 * got["term_grad_norm_distill"], rel=1e-5)
    assert half["term_grad_cosine"] == pytest.approx(got["term_grad_cosine"], rel=1e-4, abs=1e-6)


def test_term_gradients_follow_distill_trunk_and_weight(tiny_model_dir, batch) -> None:
    full = term_gradients(load_model(_cfg(tiny_model_dir)), batch, _cfg(tiny_model_dir))
    cfg = _cfg(tiny_model_dir, distill_trunk="detach")
    detached = term_gradients(load_model(cfg), batch, cfg)
    assert detached["term_grad_norm_distill"] == 0.0
    assert math.isnan(detached["term_grad_cosine"])
    assert detached["term_grad_norm_contrastive"] == pytest.approx(
        full["term_grad_norm_contrastive"], rel=1e-6
    )
    cfg = _cfg(tiny_model_dir, distill_trunk="scaled:0.5", distill_weight=4.0)
    both = term_gradients(load_model(cfg), batch, cfg)
    assert both["term_grad_norm_distill"] == pytest.approx(2.0 * full["term_grad_norm_distill"], rel=1e-5)
    assert both["term_grad_cosine"] == pytest.approx(full["term_grad_cosine"], rel=1e-4, abs=1e-6)


def test_term_gradients_of_the_ablations(tiny_model_dir, batch) -> None:
    full = term_gradients(load_model(_cfg(tiny_model_dir)), batch, _cfg(tiny_model_dir))
    cfg = _cfg(tiny_model_dir, loss="drdo_minus_r")
    minus_r = term_gradients(load_model(cfg), {k: v for k, v in batch.items() if "oracle" not in k}, cfg)
    assert minus_r["term_grad_norm_distill"] == 0.0 and math.isnan(minus_r["term_grad_cosine"])
    assert minus_r["term_grad_norm_contrastive"] == pytest.approx(
        full["term_grad_norm_contrastive"], rel=1e-6
    )
    cfg = _cfg(tiny_model_dir, loss="drdo_minus_c")
    minus_c = term_gradients(load_model(cfg), batch, cfg)
    assert minus_c["term_grad_norm_contrastive"] == 0.0 and math.isnan(minus_c["term_grad_cosine"])
    assert minus_c["term_grad_norm_distill"] == pytest.approx(full["term_grad_norm_distill"], rel=1e-6)
    with pytest.raises(ValueError, match="DRDO family"):
        term_gradients(load_model(cfg), batch, _cfg(tiny_model_dir, loss="dpo"))


def test_term_gradients_with_chunked_logps(tiny_model_dir, batch) -> None:
    cfg = _cfg(tiny_model_dir)
    plain = term_gradients(load_model(cfg), batch, cfg)
    chunked_cfg = _cfg(tiny_model_dir, logps_chunk_size=5)
    model = load_model(chunked_cfg)
    assert term_gradients(model, batch, chunked_cfg) == pytest.approx(plain, rel=1e-4)


def test_term_gradients_are_logged_where_they_apply(tiny_model_dir) -> None:
    assert term_grads_apply(_cfg(tiny_model_dir)) and term_grads_apply(
        _cfg(tiny_model_dir, loss="drdo_minus_r")
    )
    assert not term_grads_apply(_cfg(tiny_model_dir, loss="dpo"))
    assert not term_grads_apply(_cfg(tiny_model_dir, stage="oracle", loss=None))
    assert not term_grads_apply(_cfg(tiny_model_dir, term_grads=False))
    assert term_grads_apply(_cfg(tiny_model_dir, deepspeed={"enabled": True, "zero_stage": 2}))
    assert not term_grads_apply(_cfg(tiny_model_dir, deepspeed={"enabled": True, "zero_stage": 3}))
