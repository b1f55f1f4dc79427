"""Tests for drdo_ray.losses: hand-computed values, gradients, stability, dtypes, registry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from drdo_ray.losses import (
    LOG1MEXP_EPS,
    LOSS_INPUTS,
    LOSSES,
    dpo_loss,
    drdo_loss,
    edpo_loss,
    ipo_loss,
    log1mexp,
    oracle_loss,
    sft_loss,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(*xs: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(xs, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Shared small batches (2 rows) and their hand-computed per-row terms
# --------------------------------------------------------------------------------------------

# DRDO: z_w, z_l, r̂_w, r̂_l, r*_w, r*_l
ZW, ZL = (-1.0, -1.5), (-2.0, -0.5)
RW, RL = (0.5, -0.3), (0.2, 0.1)
OW, OL = (1.0, 0.2), (0.0, 0.4)


def drdo_inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    return tuple(t(*x, dtype=dtype) for x in (ZW, ZL, RW, RL, OW, OL))


# distillation: (Δr* - Δr̂)²
#   row 0: Δr* = 1.0 - 0.0 = 1.0,  Δr̂ = 0.5 - 0.2 = 0.3   → (0.7)² = 0.49
#   row 1: Δr* = 0.2 - 0.4 = -0.2, Δr̂ = -0.3 - 0.1 = -0.4 → (0.2)² = 0.04
DISTILL = (0.49, 0.04)


def contrastive_row(zw: float, zl: float, alpha: float = 0.1, gamma: float = 2.0) -> float:
    # -α (1 - σ(z_w - z_l))^γ (z_w - log(1 - e^{z_l}))
    return -alpha * (1.0 - sig(zw - zl)) ** gamma * (zw - math.log(1.0 - math.exp(zl)))


CONTRASTIVE = tuple(contrastive_row(zw, zl) for zw, zl in zip(ZW, ZL))


# DPO family: z_w, z_l, z_w^ref, z_l^ref
PZW, PZL, RZW, RZL = (-1.0, -3.0), (-2.0, -1.0), (-1.2, -2.0), (-1.5, -2.0)
# h = (z_w - z_w^ref) - (z_l - z_l^ref)
#   row 0: (-1.0 + 1.2) - (-2.0 + 1.5) = 0.2 + 0.5 = 0.7
#   row 1: (-3.0 + 2.0) - (-1.0 + 2.0) = -1.0 - 1.0 = -2.0
H = (0.7, -2.0)


def dpo_inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    return tuple(t(*x, dtype=dtype) for x in (PZW, PZL, RZW, RZL))


# e-DPO: K = 3 members, B = 2
E_OW = ((1.0, 0.0), (0.5, 0.5), (0.0, -1.0))
E_OL = ((0.0, 0.5), (0.5, 0.0), (0.2, 0.0))


def edpo_member_losses(beta: float = 0.1) -> list[float]:
    out = []
    for ow, ol in zip(E_OW, E_OL):
        rows = [(ow[i] - ol[i] - beta * H[i]) ** 2 for i in range(2)]
        out.append(sum(rows) / 2)
    return out


# --------------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------------


def test_drdo_full_value_and_metrics() -> None:
    loss, m = drdo_loss(*drdo_inputs())
    expected = ((DISTILL[0] + CONTRASTIVE[0]) + (DISTILL[1] + CONTRASTIVE[1])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["loss"] == pytest.approx(expected, rel=1e-12)
    assert m["distill_loss"] == pytest.approx((0.49 + 0.04) / 2, rel=1e-12)
    assert m["contrastive_loss"] == pytest.approx(sum(CONTRASTIVE) / 2, rel=1e-12)
    assert m["distill_loss"] + m["contrastive_loss"] == pytest.approx(m["loss"], rel=1e-12)
    # r̂: row 0 0.5 > 0.2 (correct), row 1 -0.3 < 0.1 (wrong)
    assert m["reward_accuracy"] == pytest.approx(0.5)
    assert m["margin"] == pytest.approx((0.3 + -0.4) / 2)
    assert m["p_w"] == pytest.approx((sig(1.0) + sig(-1.0)) / 2)  # = 0.5
    assert m["oracle_margin"] == pytest.approx((1.0 + -0.2) / 2)
    assert m["chosen_logps"] == pytest.approx((-1.0 - 1.5) / 2)
    assert m["rejected_logps"] == pytest.approx((-2.0 - 0.5) / 2)
    assert all(isinstance(v, float) for v in m.values())


def test_drdo_float32_value() -> None:
    loss, _ = drdo_loss(*drdo_inputs(torch.float32))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((sum(DISTILL) + sum(CONTRASTIVE)) / 2, rel=1e-5)


def test_drdo_alpha_gamma_are_used() -> None:
    loss, _ = drdo_loss(*drdo_inputs(), alpha=1.0, gamma=0.0)
    # γ = 0: the focal weight is 1, so the term is -α·(z_w - log(1 - e^{z_l}))
    c = [-1.0 * (zw - math.log(1 - math.exp(zl))) for zw, zl in zip(ZW, ZL)]
    assert loss.item() == pytest.approx((sum(DISTILL) + sum(c)) / 2, rel=1e-12)


def test_drdo_distill_only() -> None:
    loss, m = drdo_loss(*drdo_inputs(), contrastive=False)
    assert loss.item() == pytest.approx((0.49 + 0.04) / 2, rel=1e-12)
    # the disabled term is still reported, as computed
    assert m["contrastive_loss"] == pytest.approx(sum(CONTRASTIVE) / 2, rel=1e-12)


def test_drdo_contrastive_only() -> None:
    loss, m = drdo_loss(*drdo_inputs(), distill=False)
    assert loss.item() == pytest.approx(sum(CONTRASTIVE) / 2, rel=1e-12)
    assert m["distill_loss"] == pytest.approx(0.265, rel=1e-12)  # reported, not in the loss


def test_drdo_contrastive_only_accepts_missing_oracle() -> None:
    zw, zl, rw, rl, _, _ = drdo_inputs()
    loss, m = drdo_loss(zw, zl, rw, rl, None, None, distill=False)
    assert loss.item() == pytest.approx(sum(CONTRASTIVE) / 2, rel=1e-12)
    assert m["distill_loss"] == 0.0
    assert m["oracle_margin"] == 0.0
    with pytest.raises(ValueError, match="oracle_chosen"):
        drdo_loss(zw, zl, rw, rl, None, None)


def test_drdo_terms_only_move_their_own_inputs() -> None:
    zw, zl, rw, rl, ow, ol = (x.requires_grad_() for x in drdo_inputs())
    loss, _ = drdo_loss(zw, zl, rw, rl, ow, ol, contrastive=False)
    g = torch.autograd.grad(loss, [zw, zl, rw, rl], allow_unused=True, materialize_grads=True)
    assert torch.all(g[0] == 0) and torch.all(g[1] == 0)
    # d/dr̂_w mean((Δr* - Δr̂)²) = -2(Δr* - Δr̂)/B = -(0.7, 0.2)
    torch.testing.assert_close(g[2], t(-0.7, -0.2))
    torch.testing.assert_close(g[3], t(0.7, 0.2))
    loss, _ = drdo_loss(zw, zl, rw, rl, ow, ol, distill=False)
    g = torch.autograd.grad(loss, [zw, rw], allow_unused=True, materialize_grads=True)
    assert torch.all(g[0] != 0)
    assert torch.all(g[1] == 0)


@pytest.mark.parametrize("weight", [0.0, 0.25, 3.0])
def test_drdo_distill_weight_scales_only_the_distillation_term(weight: float) -> None:
    zw, zl, rw, rl, ow, ol = (x.requires_grad_() for x in drdo_inputs())
    loss, m = drdo_loss(zw, zl, rw, rl, ow, ol, distill_weight=weight)
    assert loss.item() == pytest.approx((weight * sum(DISTILL) + sum(CONTRASTIVE)) / 2, rel=1e-12)
    # the metric is the term as computed, unweighted
    assert m["distill_loss"] == pytest.approx(sum(DISTILL) / 2, rel=1e-12)
    assert m["contrastive_loss"] == pytest.approx(sum(CONTRASTIVE) / 2, rel=1e-12)
    g = torch.autograd.grad(loss, [zw, zl, rw, rl])
    base = torch.autograd.grad(drdo_loss(zw, zl, rw, rl, ow, ol)[0], [zw, zl, rw, rl])
    # rewards are read by the distillation term only: their gradient scales by λ exactly;
    # log-probs by the contrastive term only: unchanged
    torch.testing.assert_close(g[2], weight * base[2], rtol=1e-12, atol=0)
    torch.testing.assert_close(g[3], weight * base[3], rtol=1e-12, atol=0)
    assert torch.equal(g[0], base[0]) and torch.equal(g[1], base[1])
    only_distill, _ = drdo_loss(zw, zl, rw, rl, ow, ol, contrastive=False, distill_weight=weight)
    assert only_distill.item() == pytest.approx(weight * sum(DISTILL) / 2, rel=1e-12)


def test_drdo_distill_weight_default_is_the_paper_loss() -> None:
    assert torch.equal(drdo_loss(*drdo_inputs())[0], drdo_loss(*drdo_inputs(), distill_weight=1.0)[0])
    with pytest.raises(ValueError, match="distill_weight"):
        drdo_loss(*drdo_inputs(), distill_weight=-0.5)


def test_drdo_both_flags_off_raises() -> None:
    with pytest.raises(ValueError, match="enable at least one"):
        drdo_loss(*drdo_inputs(), distill=False, contrastive=False)


def test_dpo_value_and_metrics() -> None:
    beta = 0.1
    loss, m = dpo_loss(*dpo_inputs(), beta=beta)
    # -log σ(x) = log(1 + e^{-x})
    expected = (math.log(1 + math.exp(-beta * 0.7)) + math.log(1 + math.exp(-beta * -2.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # implicit rewards β(z - z_ref): row 0 0.02 vs -0.05 (correct); row 1 -0.1 vs 0.1 (wrong)
    assert m["reward_accuracy"] == pytest.approx(0.5)
    assert m["margin"] == pytest.approx((0.07 + -0.2) / 2)
    assert m["chosen_rewards"] == pytest.approx((0.02 + -0.1) / 2)
    assert m["rejected_rewards"] == pytest.approx((-0.05 + 0.1) / 2)
    assert m["contrastive_loss"] == 0.0


def test_dpo_beta_is_used() -> None:
    loss, _ = dpo_loss(*dpo_inputs(), beta=0.5)
    expected = (math.log(1 + math.exp(-0.35)) + math.log(1 + math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_dpo_plus_contrastive_value() -> None:
    loss, m = dpo_loss(*dpo_inputs(), contrastive_alpha=0.1, gamma=2.0)
    dpo = [math.log(1 + math.exp(-0.1 * h)) for h in H]
    con = [contrastive_row(zw, zl, alpha=0.1, gamma=2.0) for zw, zl in zip(PZW, PZL)]
    assert loss.item() == pytest.approx((dpo[0] + con[0] + dpo[1] + con[1]) / 2, rel=1e-12)
    assert m["dpo_loss"] == pytest.approx(sum(dpo) / 2, rel=1e-12)
    assert m["contrastive_loss"] == pytest.approx(sum(con) / 2, rel=1e-12)


def test_ipo_value() -> None:
    beta = 0.1
    loss, m = ipo_loss(*dpo_inputs(), beta=beta)
    # 1/(2β) = 5
    expected = ((0.7 - 5.0) ** 2 + (-2.0 - 5.0) ** 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["reward_accuracy"] == pytest.approx(0.5)
    loss, _ = ipo_loss(*dpo_inputs(), beta=0.5)  # 1/(2β) = 1
    assert loss.item() == pytest.approx(((0.7 - 1.0) ** 2 + (-3.0) ** 2) / 2, rel=1e-12)


def test_edpo_values_and_reduce() -> None:
    ow, ol = torch.tensor(E_OW, dtype=torch.float64), torch.tensor(E_OL, dtype=torch.float64)
    members = edpo_member_losses()
    # member 0: Δr* = (1.0, -0.5), βh = (0.07, -0.2) → ((0.93)² + (-0.3)²)/2
    assert members[0] == pytest.approx((0.93**2 + 0.3**2) / 2)
    loss_max, m = edpo_loss(*dpo_inputs(), ow, ol, reduce="max")
    assert loss_max.item() == pytest.approx(max(members), rel=1e-12)
    per_member = [m[f"member_loss_{k}"] for k in range(3)]
    assert per_member == pytest.approx(members, rel=1e-12)
    assert loss_max.item() == pytest.approx(max(per_member), rel=1e-12)
    assert "member_loss_3" not in m
    loss_mean, m = edpo_loss(*dpo_inputs(), ow, ol, reduce="mean")
    assert loss_mean.item() == pytest.approx(sum(members) / 3, rel=1e-12)
    assert m["oracle_margin"] == pytest.approx((1.0 - 0.5 + 0.0 + 0.5 - 0.2 - 1.0) / 6)
    assert m["reward_accuracy"] == pytest.approx(0.5)


def test_edpo_single_member() -> None:
    ow, ol = torch.tensor(E_OW[:1], dtype=torch.float64), torch.tensor(E_OL[:1], dtype=torch.float64)
    members = edpo_member_losses()
    lmax, _ = edpo_loss(*dpo_inputs(), ow, ol, reduce="max")
    lmean, _ = edpo_loss(*dpo_inputs(), ow, ol, reduce="mean")
    lflat, _ = edpo_loss(*dpo_inputs(), ow[0], ol[0])  # (B,) is K = 1
    assert lmax.item() == pytest.approx(members[0], rel=1e-12)
    assert lmean.item() == pytest.approx(members[0], rel=1e-12)
    assert lflat.item() == pytest.approx(members[0], rel=1e-12)


def test_edpo_max_gradient_follows_worst_member() -> None:
    members = edpo_member_losses()
    worst = max(range(3), key=lambda k: members[k])
    ow = torch.tensor(E_OW, dtype=torch.float64, requires_grad=True)
    loss, _ = edpo_loss(*dpo_inputs(), ow, torch.tensor(E_OL, dtype=torch.float64))
    (g,) = torch.autograd.grad(loss, [ow])
    for k in range(3):
        assert torch.any(g[k] != 0) == (k == worst)


def test_edpo_unknown_reduce_raises() -> None:
    ow, ol = torch.tensor(E_OW), torch.tensor(E_OL)
    with pytest.raises(ValueError, match="reduce"):
        edpo_loss(*dpo_inputs(), ow, ol, reduce="min")


def test_oracle_value_and_metrics() -> None:
    rw, rl, nll = t(1.0, -0.5), t(0.0, 0.5), t(2.0, 3.0)
    loss, m = oracle_loss(rw, rl, nll, oracle_alpha=0.01)
    # -(1-α) log σ(r_w - r_l) + α·nll, with r_w - r_l = (1.0, -1.0)
    rows = [-0.99 * math.log(sig(1.0)) + 0.01 * 2.0, -0.99 * math.log(sig(-1.0)) + 0.01 * 3.0]
    assert loss.item() == pytest.approx(sum(rows) / 2, rel=1e-12)
    assert m["bt_loss"] == pytest.approx((-math.log(sig(1.0)) - math.log(sig(-1.0))) / 2, rel=1e-12)
    assert m["nll"] == pytest.approx(2.5)
    assert m["reward_accuracy"] == pytest.approx(0.5)
    assert m["margin"] == pytest.approx(0.0)
    # α = 0 is plain Bradley-Terry
    loss0, _ = oracle_loss(rw, rl, nll, oracle_alpha=0.0)
    assert loss0.item() == pytest.approx(m["bt_loss"], rel=1e-12)


def test_sft_value() -> None:
    loss, m = sft_loss(t(-1.0, -3.0))
    assert loss.item() == pytest.approx(2.0)
    assert m["nll"] == pytest.approx(2.0)
    assert m["chosen_logps"] == pytest.approx(-2.0)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def _rand(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    x = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    return x.requires_grad_()


# each case takes (z_w, z_l, r̂_w, r̂_l, r*_w, r*_l, z_w^ref, z_l^ref, e-DPO r*_w (K,B), e-DPO r*_l)
GRADCHECK_CASES = {
    "drdo": lambda *a: drdo_loss(*a[:6])[0],
    "drdo_minus_r": lambda *a: drdo_loss(*a[:6], distill=False)[0],
    "drdo_minus_c": lambda *a: drdo_loss(*a[:6], contrastive=False)[0],
    "drdo_gamma_half": lambda *a: drdo_loss(*a[:6], gamma=0.5)[0],
    "dpo": lambda *a: dpo_loss(a[0], a[1], a[6], a[7])[0],
    "dpo_plus_c": lambda *a: dpo_loss(a[0], a[1], a[6], a[7], contrastive_alpha=0.1)[0],
    "ipo": lambda *a: ipo_loss(a[0], a[1], a[6], a[7])[0],
    "edpo_max": lambda *a: edpo_loss(a[0], a[1], a[6], a[7], a[8], a[9], reduce="max")[0],
    "edpo_mean": lambda *a: edpo_loss(a[0], a[1], a[6], a[7], a[8], a[9], reduce="mean")[0],
    "oracle": lambda *a: oracle_loss(a[2], a[3], -a[0], oracle_alpha=0.1)[0],
    "sft": lambda *a: sft_loss(a[0])[0],
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    b = 3
    inputs = (
        _rand(b, -3.0, -0.1, gen),  # z_w (both log1mexp branches are hit: -ln2 ≈ -0.69)
        _rand(b, -3.0, -0.1, gen),  # z_l
        _rand(b, -2.0, 2.0, gen),  # r̂_w
        _rand(b, -2.0, 2.0, gen),  # r̂_l
        _rand(b, -2.0, 2.0, gen),  # r*_w
        _rand(b, -2.0, 2.0, gen),  # r*_l
        _rand(b, -3.0, -0.1, gen),  # z_w^ref
        _rand(b, -3.0, -0.1, gen),  # z_l^ref
        _rand(3 * b, -2.0, 2.0, gen).detach().view(3, b).requires_grad_(),  # e-DPO r*_w (K, B)
        _rand(3 * b, -2.0, 2.0, gen).detach().view(3, b).requires_grad_(),  # e-DPO r*_l
    )
    assert torch.autograd.gradcheck(GRADCHECK_CASES[name], inputs)


def test_gradcheck_log1mexp_both_branches() -> None:
    z = t(-30.0, -5.0, -1.0, -0.7, -0.6, -0.1, -1e-3).requires_grad_()
    assert torch.autograd.gradcheck(log1mexp, (z,))


def test_focal_weight_damps_confident_pairs() -> None:
    """Paper §4: the modulating term amplifies updates at p_w ≈ 0.5 and tempers them at p_w ≈ 1."""

    def grad_wrt_chosen(zw: float, zl: float) -> tuple[float, float]:
        z = torch.tensor([zw], requires_grad=True)
        loss, m = drdo_loss(z, torch.tensor([zl]), torch.zeros(1), torch.zeros(1), None, None, distill=False)
        (g,) = torch.autograd.grad(loss, [z])
        return abs(g.item()), m["p_w"]

    g_half, p_half = grad_wrt_chosen(-1.0, -1.0)
    g_one, p_one = grad_wrt_chosen(-1.0, -9.0)
    assert p_half == pytest.approx(0.5)
    assert p_one > 0.999
    assert g_half > 100 * g_one
    # γ = 0 switches the modulation off: same weight (α) whatever p_w
    z = torch.tensor([-1.0, -1.0], requires_grad=True)
    loss, _ = drdo_loss(
        z,
        t(-1.0, -9.0, dtype=torch.float32),
        torch.zeros(2),
        torch.zeros(2),
        None,
        None,
        distill=False,
        gamma=0.0,
    )
    (g,) = torch.autograd.grad(loss, [z])
    torch.testing.assert_close(g, torch.tensor([-0.05, -0.05]))


def test_focal_weight_is_differentiated() -> None:
    """The focal weight is not detached (paper App. B.6, Eq. 48): check d/dz_w against
    -α s^γ [1 - γ p_w (z_w - log(1 - e^{z_l}))], s = 1 - p_w, which includes its derivative."""
    alpha, gamma, zw, zl = 0.1, 2.0, -1.0, -1.5
    z = torch.tensor([zw], dtype=torch.float64, requires_grad=True)
    loss, _ = drdo_loss(z, t(zl), t(0.0), t(0.0), None, None, alpha=alpha, gamma=gamma, distill=False)
    (g,) = torch.autograd.grad(loss, [z])
    p = sig(zw - zl)
    s = 1 - p
    expected = -alpha * s**gamma * (1 - gamma * p * (zw - math.log(1 - math.exp(zl))))
    assert g.item() == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------------------------
# Numerical stability
# --------------------------------------------------------------------------------------------

EXTREME_LOGPS = (-1e4, -1.0, -1e-9)
EXTREME_REWARDS = (-1e4, 0.0, 1e4)


def _all_finite(loss: torch.Tensor, tensors: list[torch.Tensor]) -> bool:
    grads = torch.autograd.grad(loss, tensors, allow_unused=True, materialize_grads=True)
    return bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)


def _grid() -> tuple[torch.Tensor, ...]:
    # every combination of extreme log-probs × extreme rewards, as one float32 batch; it holds
    # z_l = -1e-9 and z_w - z_l = ±(1e4 - 1e-9)
    rows = list(itertools.product(EXTREME_LOGPS, EXTREME_LOGPS, EXTREME_REWARDS, EXTREME_REWARDS))
    cols = list(zip(*rows))
    return tuple(torch.tensor(c, dtype=torch.float32, requires_grad=True) for c in cols)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("flags", [(True, True), (False, True), (True, False)])
def test_drdo_extreme_inputs_are_finite(gamma: float, flags: tuple[bool, bool]) -> None:
    zw, zl, rw, rl = _grid()
    ow, ol = rl.detach().flip(0), rw.detach().flip(0)  # Δr* up to ±2e4 against Δr̂
    loss, m = drdo_loss(zw, zl, rw, rl, ow, ol, gamma=gamma, distill=flags[0], contrastive=flags[1])
    assert loss.dtype == torch.float32
    assert _all_finite(loss, [zw, zl, rw, rl])
    assert all(math.isfinite(v) for v in m.values())


def test_baselines_extreme_inputs_are_finite() -> None:
    zw, zl, rw, rl = _grid()
    rzw, rzl = zl.detach().flip(0), zw.detach().flip(0)
    for loss, _ in (
        dpo_loss(zw, zl, rzw, rzl),
        dpo_loss(zw, zl, rzw, rzl, contrastive_alpha=0.1),
        ipo_loss(zw, zl, rzw, rzl),
        edpo_loss(zw, zl, rzw, rzl, torch.stack([rw, rl]).detach(), torch.stack([rl, rw]).detach()),
    ):
        assert _all_finite(loss, [zw, zl])
    loss, _ = oracle_loss(rw, rl, -zw)
    assert _all_finite(loss, [rw, rl, zw])
    loss, _ = sft_loss(zw)
    assert _all_finite(loss, [zw])


def test_log1mexp_matches_float64_reference() -> None:
    z64 = torch.cat(
        [
            torch.linspace(-50.0, -1.0, 200, dtype=torch.float64),
            -torch.logspace(0, -6, 200, dtype=torch.float64),
        ]
    )
    reference = torch.log(1.0 - torch.exp(z64))  # naive formula is accurate enough in float64 here
    got = log1mexp(z64.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference, rtol=1e-5, atol=1e-6)


def test_log1mexp_finite_near_zero() -> None:
    z = torch.tensor([0.0, 1e-3, -1e-12, -1e-9, -1e-7, -1e-6, -1e-5], requires_grad=True)
    out = log1mexp(z)
    (g,) = torch.autograd.grad(out.sum(), [z])
    assert torch.isfinite(out).all() and torch.isfinite(g).all()
    # at or above the clamp the value is log(1 - e^{-eps}) ≈ log(eps)
    assert out[0].item() == pytest.approx(math.log(LOG1MEXP_EPS), rel=1e-4)
    assert out[1].item() == out[0].item()
    assert out[-1].item() == pytest.approx(math.log(-math.expm1(-1e-5)), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Dtypes and validation
# --------------------------------------------------------------------------------------------


def test_bf16_inputs_give_float32_loss_and_grads() -> None:
    zw, zl, rw, rl, ow, ol = (x.to(torch.bfloat16).requires_grad_() for x in drdo_inputs())
    loss, _ = drdo_loss(zw, zl, rw, rl, ow.detach(), ol.detach())
    assert loss.dtype == torch.float32
    # bf16 rounds the inputs, so compare with the float64 value loosely
    assert loss.item() == pytest.approx((sum(DISTILL) + sum(CONTRASTIVE)) / 2, rel=2e-2)
    loss.backward()
    for x in (zw, zl, rw, rl):
        assert x.grad is not None and x.grad.dtype == torch.bfloat16
        assert torch.isfinite(x.grad.float()).all() and torch.any(x.grad != 0)

    pzw, pzl = (x.to(torch.bfloat16).requires_grad_() for x in dpo_inputs()[:2])
    loss, _ = dpo_loss(pzw, pzl, *dpo_inputs()[2:])  # float64 reference columns, bf16 policy
    assert loss.dtype == torch.float32
    loss.backward()
    assert pzw.grad is not None and pzw.grad.dtype == torch.bfloat16


def test_mixed_float64_columns_compute_in_float32() -> None:
    zw, zl, rw, rl, ow, ol = drdo_inputs()
    loss, _ = drdo_loss(zw.float(), zl.float(), rw.float(), rl.float(), ow, ol)
    assert loss.dtype == torch.float32
    loss, _ = drdo_loss(zw, zl, rw, rl, ow, ol)  # all float64 stays float64 (for gradcheck)
    assert loss.dtype == torch.float64


def test_shape_mismatch_names_arguments() -> None:
    zw, zl, rw, rl, ow, ol = drdo_inputs()
    with pytest.raises(ValueError, match="rejected_rewards"):
        drdo_loss(zw, zl, rw, t(0.0, 1.0, 2.0), ow, ol)
    with pytest.raises(ValueError, match="oracle_chosen"):
        drdo_loss(zw, zl, rw, rl, t(1.0), ol)
    with pytest.raises(ValueError, match="chosen_logps"):
        drdo_loss(zw.view(2, 1), zl, rw, rl, ow, ol)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(*dpo_inputs()[:3], t(0.0))
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        ipo_loss(zw, zl, t(0.0), t(0.0, 0.0))
    with pytest.raises(ValueError, match="oracle_chosen"):
        edpo_loss(*dpo_inputs(), torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="oracle_chosen"):
        edpo_loss(*dpo_inputs(), torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="chosen_nll"):
        oracle_loss(t(1.0, 2.0), t(0.0, 1.0), t(1.0))
    with pytest.raises(ValueError, match="empty"):
        sft_loss(torch.zeros(0))


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*dpo_inputs(), beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        ipo_loss(*dpo_inputs(), beta=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        oracle_loss(t(1.0), t(0.0), t(1.0), oracle_alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        drdo_loss(*drdo_inputs(), gamma=-1.0)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

ALL_NAMES = {"drdo", "dpo", "ipo", "edpo", "drdo_minus_r", "drdo_minus_c", "dpo_plus_c", "sft", "oracle"}


def test_registry_covers_all_names() -> None:
    assert set(LOSSES) == ALL_NAMES
    assert set(LOSS_INPUTS) == ALL_NAMES
    assert LOSSES["drdo"] is drdo_loss and LOSSES["dpo"] is dpo_loss and LOSSES["ipo"] is ipo_loss
    assert LOSSES["edpo"] is edpo_loss and LOSSES["sft"] is sft_loss and LOSSES["oracle"] is oracle_loss
    assert LOSS_INPUTS["drdo"] == ("oracle_chosen", "oracle_rejected")
    assert LOSS_INPUTS["drdo_minus_c"] == ("oracle_chosen", "oracle_rejected")
    assert LOSS_INPUTS["drdo_minus_r"] == ()
    assert LOSS_INPUTS["dpo"] == ("ref_chosen_logps", "ref_rejected_logps")
    assert LOSS_INPUTS["dpo_plus_c"] == LOSS_INPUTS["ipo"] == LOSS_INPUTS["dpo"]
    assert set(LOSS_INPUTS["edpo"]) == {
        "ref_chosen_logps",
        "ref_rejected_logps",
        "oracle_chosen",
        "oracle_rejected",
    }
    assert LOSS_INPUTS["sft"] == () and LOSS_INPUTS["oracle"] == ()


def test_registry_ablations_match_flags() -> None:
    args = drdo_inputs()
    assert LOSSES["drdo_minus_c"](*args)[0].item() == pytest.approx(
        drdo_loss(*args, contrastive=False)[0].item(), rel=1e-12
    )
    assert LOSSES["drdo_minus_c"](*args)[0].item() == pytest.approx(sum(DISTILL) / 2, rel=1e-12)
    assert LOSSES["drdo_minus_r"](*args)[0].item() == pytest.approx(
        drdo_loss(*args, distill=False)[0].item(), rel=1e-12
    )
    assert LOSSES["drdo_minus_r"](*args[:4], None, None)[0].item() == pytest.approx(
        sum(CONTRASTIVE) / 2, rel=1e-12
    )
    assert LOSSES["drdo"](*args)[0].item() != pytest.approx(LOSSES["drdo_minus_c"](*args)[0].item())
    d = dpo_inputs()
    assert LOSSES["dpo_plus_c"](*d)[0].item() == pytest.approx(
        dpo_loss(*d, contrastive_alpha=0.1)[0].item(), rel=1e-12
    )
    assert LOSSES["dpo_plus_c"](*d)[0].item() != pytest.approx(dpo_loss(*d)[0].item())
    # hyperparameters can still be passed through the partials
    assert LOSSES["drdo_minus_r"](*args, alpha=1.0)[0].item() == pytest.approx(
        10 * sum(CONTRASTIVE) / 2, rel=1e-12
    )
