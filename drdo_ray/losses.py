"""Preference-alignment losses: DRDO (paper Eq. 5), its ablations, and the baselines.

Every loss is a pure function of per-example tensors of shape (B,) (e-DPO's Oracle rewards:
(K, B)) and returns ``(loss, metrics)``: ``loss`` a scalar tensor (the batch mean) and
``metrics`` a ``dict[str, float]``. The formulas are stated in docs/concepts.md.

Precision: the arithmetic runs in float32 whatever the input dtype (bf16/fp16 inputs are
upcast with a differentiable cast, so gradients reach them). The one exception is when every
floating input is already float64: then it stays float64, so ``torch.autograd.gradcheck``
checks the real formulas rather than float32 rounding.

Registry: ``LOSS_SPECS[name]`` (a :class:`LossSpec`) says, per loss, the function, which
tensors it takes positionally, the precomputed columns it needs, its settings class
(drdo_ray/loss_settings.py: its keyword hyperparameters and default log-prob reduction), whether
it trains a reward head and what it is. ``ALIGN_LOSSES``, ``LOSSES`` (name -> function) and
``LOSS_INPUTS`` (name -> columns) are derived from it. Keyword defaults are the settings classes'
(the paper's DRDO: :data:`~drdo_ray.loss_settings.PAPER_DRDO`). ``LOSSES[name]`` is called with the positional arguments of the underlying
function; batch columns that ``LOSS_INPUTS[name]`` does not list may be passed as ``None`` (only
``drdo_minus_r`` has such optional columns: the Oracle rewards, which it never uses).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .loss_settings import (
    PAPER_DRDO,
    DPOPlusCSettings,
    DPOSettings,
    DRDOSettings,
    EDPOSettings,
    LossSettings,
    OracleSettings,
    SFTSettings,
)

__all__ = [
    "ALIGN_LOSSES",
    "LOG1MEXP_EPS",
    "LOSSES",
    "LOSS_INPUTS",
    "LOSS_SPECS",
    "LossSpec",
    "dpo_loss",
    "drdo_loss",
    "edpo_loss",
    "ipo_loss",
    "log1mexp",
    "oracle_loss",
    "sft_loss",
]

Metrics = dict[str, float]

_LN2 = math.log(2.0)
_DPO = DPOSettings()

# log1mexp clamps its input to z <= -LOG1MEXP_EPS. At the clamp, log(1 - e^z) ≈ log(1e-6) ≈ -13.8
# and |d/dz| ≈ 1/|z| ≈ 1e6: both far from float32 overflow, so a rejected response whose
# token-mean log-prob is ~0 (or rounds to a tiny positive value in bf16) gives a finite loss and
# finite gradients. A geometric-mean token probability above 1 - 1e-6 is "certain" for any
# training purpose, so nothing is lost by flattening the loss there (the clamp's gradient is 0).
LOG1MEXP_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def log1mexp(z: torch.Tensor) -> torch.Tensor:
    """Stable ``log(1 - exp(z))`` for ``z < 0`` (Mächler 2012), elementwise.

    ``log(-expm1(z))`` is accurate near 0 (where ``1 - exp(z)`` cancels), ``log1p(-exp(z))``
    for ``z <= -ln 2`` (where ``expm1`` would lose the tiny ``exp(z)``). ``z`` is clamped to
    ``<= -LOG1MEXP_EPS`` first; see that constant for why.
    """
    z = z.clamp(max=-LOG1MEXP_EPS)
    near_zero = z > -_LN2
    ln2 = torch.full_like(z, -_LN2)
    # torch.where differentiates both branches and multiplies the unused one's gradient by 0;
    # 0 * inf = NaN, so each branch only ever sees inputs on which it is finite and accurate
    # (the clamp alone keeps both finite today; this keeps it true if the eps is ever lowered).
    z_near = torch.where(near_zero, z, ln2)
    z_far = torch.where(near_zero, ln2, z)
    return torch.where(near_zero, torch.log(-torch.expm1(z_near)), torch.log1p(-torch.exp(z_far)))


def _work_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    # float64 only when everything is float64 (gradcheck); any mix or lower precision → float32.
    if tensors and all(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _as_tensor(name: str, x: Any) -> torch.Tensor:
    if x is None:
        raise ValueError(f"{name} is required (got None)")
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _prepare(named: dict[str, Any], *, extra: Sequence[torch.Tensor] = ()) -> list[torch.Tensor]:
    """Check that all (B,) inputs share one non-empty 1-D shape, then cast to the work dtype.

    Inputs are moved to the device of the first one, so a CPU-resident precomputed column
    (Oracle rewards, reference log-probs) works with GPU log-probs. ``extra`` tensors take part
    in choosing the work dtype only (e-DPO's (K, B) Oracle rewards).
    """
    tensors = {k: _as_tensor(k, v) for k, v in named.items()}
    items = list(tensors.items())
    first_name, first = items[0]
    if first.dim() != 1:
        raise ValueError(f"{first_name} must have shape (B,), got {tuple(first.shape)}")
    if first.shape[0] == 0:
        raise ValueError(f"{first_name} is empty: a loss needs at least one example")
    for name, t in items[1:]:
        if t.shape != first.shape:
            raise ValueError(
                f"shape mismatch: {name} has shape {tuple(t.shape)} but {first_name} has "
                f"{tuple(first.shape)}; all per-example inputs must be (B,)"
            )
    dtype = _work_dtype([*tensors.values(), *extra])
    return [t.to(device=first.device, dtype=dtype) for t in tensors.values()]


def _mean(x: torch.Tensor) -> float:
    x = x.detach()
    return float((x if x.is_floating_point() else x.float()).mean().item())


def _check_nonneg(**kwargs: float) -> None:
    for name, v in kwargs.items():
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def _check_pos(**kwargs: float) -> None:
    for name, v in kwargs.items():
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _contrastive_rows(
    chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, alpha: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row focal-softened contrastive log-unlikelihood of Eq. 5, and p_w.

        -α · (1 - p_w)^γ · (z_w - log(1 - exp(z_l))),   p_w = σ(z_w - z_l)

    The focal weight (1 - p_w)^γ is NOT detached: the paper's gradient (App. B.6, Eq. 48)
    differentiates it — its first term αγ(1-p_w)^γ p_w (∇z_w - ∇z_l)·log(π_w/(1-π_l)) comes from
    the modulating factor — and focal loss (Lin et al., 2018), which Eq. 5 builds on, also
    back-propagates through its modulating factor. Computed as exp(γ·logσ(z_l - z_w)) — that is
    σ(z_l - z_w)^γ without forming 1 - p_w by subtraction — so it neither cancels when p_w ≈ 1
    nor gives 0·inf gradients at (1 - p_w) = 0 for γ < 1.
    """
    margin = chosen_logps - rejected_logps
    focal = torch.exp(gamma * F.logsigmoid(-margin))
    log_odds = chosen_logps - log1mexp(rejected_logps)
    return -alpha * focal * log_odds, torch.sigmoid(margin)


def _pair_metrics(
    loss: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
) -> Metrics:
    with torch.no_grad():
        return {
            "loss": float(loss.detach().item()),
            "reward_accuracy": _mean((chosen_rewards > rejected_rewards).float()),
            "margin": _mean(chosen_rewards - rejected_rewards),
            "chosen_rewards": _mean(chosen_rewards),
            "rejected_rewards": _mean(rejected_rewards),
            "chosen_logps": _mean(chosen_logps),
            "rejected_logps": _mean(rejected_logps),
        }


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def drdo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    oracle_chosen: torch.Tensor | None,
    oracle_rejected: torch.Tensor | None,
    *,
    alpha: float = PAPER_DRDO.alpha,
    gamma: float = PAPER_DRDO.gamma,
    distill: bool = True,
    contrastive: bool = True,
    distill_weight: float = PAPER_DRDO.distill_weight,
) -> tuple[torch.Tensor, Metrics]:
    """DRDO knowledge-distillation loss (paper Eq. 5), batch mean of

        distill·λ·(Δr* - Δr̂)²  +  contrastive·[-α (1 - p_w)^γ (z_w - log(1 - exp(z_l)))]

    ``chosen/rejected_logps`` are the policy's z_w, z_l; ``chosen/rejected_rewards`` its reward
    head r̂; ``oracle_*`` the frozen Oracle's r*. ``distill=False`` is DRDO(-R) (the Oracle
    rewards may then be None), ``contrastive=False`` DRDO(-C). ``distill_weight`` is λ >= 0
    (1.0 is the paper's Eq. 5; the paper leaves the balance of the two terms to α alone, and
    the distillation term's gradient can dwarf the contrastive one's).

    Metrics ``distill_loss`` and ``contrastive_loss`` are the two terms' batch means as computed,
    unweighted by λ and whether or not a flag keeps them out of the loss; ``distill_loss`` and
    ``oracle_margin`` are 0.0 when the Oracle rewards are not given (only allowed with
    ``distill=False``).
    """
    if not (distill or contrastive):
        raise ValueError(
            "drdo_loss: distill=False and contrastive=False leave no loss term; "
            "enable at least one of the two"
        )
    _check_nonneg(alpha=alpha, gamma=gamma, distill_weight=distill_weight)
    have_oracle = oracle_chosen is not None and oracle_rejected is not None
    if distill and not have_oracle:
        raise ValueError("drdo_loss: oracle_chosen and oracle_rejected are required when distill=True")
    named: dict[str, Any] = {
        "chosen_logps": chosen_logps,
        "rejected_logps": rejected_logps,
        "chosen_rewards": chosen_rewards,
        "rejected_rewards": rejected_rewards,
    }
    if have_oracle:
        named |= {"oracle_chosen": oracle_chosen, "oracle_rejected": oracle_rejected}
    zw, zl, rw, rl, *oracle = _prepare(named)

    contrastive_rows, p_w = _contrastive_rows(zw, zl, alpha, gamma)
    if have_oracle:
        ow, ol = oracle
        distill_rows = ((ow - ol) - (rw - rl)) ** 2
    else:
        distill_rows = torch.zeros_like(zw)

    rows = torch.zeros_like(zw)
    if distill:
        rows = rows + distill_weight * distill_rows
    if contrastive:
        rows = rows + contrastive_rows
    loss = rows.mean()

    metrics = _pair_metrics(loss, zw, zl, rw, rl)
    metrics |= {
        "p_w": _mean(p_w),
        "distill_loss": _mean(distill_rows),
        "contrastive_loss": _mean(contrastive_rows),
        "oracle_margin": _mean(oracle[0] - oracle[1]) if have_oracle else 0.0,
    }
    return loss, metrics


def _dpo_logits(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    extra: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, ...]:
    zw, zl, rzw, rzl = _prepare(
        {
            "chosen_logps": chosen_logps,
            "rejected_logps": rejected_logps,
            "ref_chosen_logps": ref_chosen_logps,
            "ref_rejected_logps": ref_rejected_logps,
        },
        extra=extra,
    )
    h = (zw - rzw) - (zl - rzl)
    return zw, zl, rzw, rzl, h


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = _DPO.beta,
    contrastive_alpha: float = 0.0,
    gamma: float = PAPER_DRDO.gamma,
) -> tuple[torch.Tensor, Metrics]:
    """DPO: batch mean of -log σ(β·h), h = (z_w - z_w^ref) - (z_l - z_l^ref).

    ``contrastive_alpha > 0`` adds DRDO's contrastive term with α = contrastive_alpha and
    γ = gamma (DPO(+C)). Metrics use the implicit rewards β·(z - z_ref).
    """
    _check_pos(beta=beta)
    _check_nonneg(contrastive_alpha=contrastive_alpha, gamma=gamma)
    zw, zl, rzw, rzl, h = _dpo_logits(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    dpo_rows = -F.logsigmoid(beta * h)
    contrastive_rows, p_w = _contrastive_rows(zw, zl, contrastive_alpha, gamma)
    rows = dpo_rows + contrastive_rows if contrastive_alpha > 0 else dpo_rows
    loss = rows.mean()

    metrics = _pair_metrics(loss, zw, zl, beta * (zw - rzw), beta * (zl - rzl))
    metrics |= {
        "dpo_loss": _mean(dpo_rows),
        "contrastive_loss": _mean(contrastive_rows),  # exactly 0.0 when contrastive_alpha == 0
        "p_w": _mean(p_w),
    }
    return loss, metrics


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = _DPO.beta,
) -> tuple[torch.Tensor, Metrics]:
    """IPO (Azar et al., 2024): batch mean of (h - 1/(2β))², h as in DPO."""
    _check_pos(beta=beta)
    zw, zl, rzw, rzl, h = _dpo_logits(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    metrics = _pair_metrics(loss, zw, zl, beta * (zw - rzw), beta * (zl - rzl))
    metrics["h"] = _mean(h)
    return loss, metrics


def edpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    oracle_chosen: torch.Tensor,
    oracle_rejected: torch.Tensor,
    *,
    beta: float = _DPO.beta,
    reduce: str = EDPOSettings.model_fields["edpo_reduce"].default,
) -> tuple[torch.Tensor, Metrics]:
    """e-DPO (ensemble reward distillation): per member k, L_k = mean_B (Δr*_k - β·h)².

    ``oracle_chosen/rejected`` have shape (K, B) (a (B,) tensor is taken as K = 1).
    ``reduce="max"`` is the pessimistic objective (the worst member's batch loss; its gradient
    flows through that member only), ``"mean"`` averages the members.
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"edpo_loss: reduce must be 'max' or 'mean', got {reduce!r}")
    _check_pos(beta=beta)
    ow = _as_tensor("oracle_chosen", oracle_chosen)
    ol = _as_tensor("oracle_rejected", oracle_rejected)
    if ow.dim() == 1:
        ow = ow.unsqueeze(0)
    if ol.dim() == 1:
        ol = ol.unsqueeze(0)
    if ow.dim() != 2 or ow.shape != ol.shape or ow.shape[0] == 0:
        raise ValueError(
            f"oracle_chosen and oracle_rejected must share a (K, B) shape with K >= 1, got "
            f"{tuple(ow.shape)} and {tuple(ol.shape)}"
        )
    zw, zl, rzw, rzl, h = _dpo_logits(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, extra=(ow, ol)
    )
    if ow.shape[1] != h.shape[0]:
        raise ValueError(
            f"shape mismatch: oracle_chosen has shape {tuple(ow.shape)} (K, B) but chosen_logps "
            f"has B = {h.shape[0]}"
        )
    ow = ow.to(device=h.device, dtype=h.dtype)
    ol = ol.to(device=h.device, dtype=h.dtype)

    member_losses = (((ow - ol) - beta * h.unsqueeze(0)) ** 2).mean(dim=1)  # (K,)
    loss = member_losses.max() if reduce == "max" else member_losses.mean()

    metrics = _pair_metrics(loss, zw, zl, beta * (zw - rzw), beta * (zl - rzl))
    metrics["oracle_margin"] = _mean(ow - ol)
    for k, v in enumerate(member_losses.detach().tolist()):
        metrics[f"member_loss_{k}"] = float(v)
    return loss, metrics


def oracle_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_nll: torch.Tensor,
    *,
    oracle_alpha: float = OracleSettings.model_fields["oracle_alpha"].default,
) -> tuple[torch.Tensor, Metrics]:
    """Oracle training (paper Eq. 4): batch mean of -(1-α_o)·log σ(r_w - r_l) + α_o·NLL(y_w|x).

    ``chosen_nll`` is the per-example token-mean NLL of the chosen response. ``oracle_alpha``
    (α_o) = 0 is plain Bradley-Terry (Eq. 2, used for e-DPO's ensemble).
    """
    if not (0.0 <= oracle_alpha <= 1.0):
        raise ValueError(f"oracle_loss: oracle_alpha must be in [0, 1], got {oracle_alpha!r}")
    rw, rl, nll = _prepare(
        {"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards, "chosen_nll": chosen_nll}
    )
    bt_rows = -F.logsigmoid(rw - rl)
    loss = ((1.0 - oracle_alpha) * bt_rows + oracle_alpha * nll).mean()
    with torch.no_grad():
        metrics = {
            "loss": float(loss.detach().item()),
            "reward_accuracy": _mean((rw > rl).float()),
            "margin": _mean(rw - rl),
            "chosen_rewards": _mean(rw),
            "rejected_rewards": _mean(rl),
            "bt_loss": _mean(bt_rows),
            "nll": _mean(nll),
        }
    return loss, metrics


def sft_loss(chosen_logps: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """SFT: ``chosen_logps`` are per-example token-mean log-probs; loss = -mean (token-mean NLL)."""
    (z,) = _prepare({"chosen_logps": chosen_logps})
    loss = -z.mean()
    metrics = {
        "loss": float(loss.detach().item()),
        "nll": float(loss.detach().item()),
        "chosen_logps": _mean(z),
    }
    return loss, metrics


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_ORACLE = ("oracle_chosen", "oracle_rejected")
_REF = ("ref_chosen_logps", "ref_rejected_logps")
_PAIR = ("chosen_logps", "rejected_logps")
_DRDO_ARGS = (*_PAIR, "chosen_rewards", "rejected_rewards", *_ORACLE)


@dataclass(frozen=True)
class LossSpec:
    """How training calls one loss. ``fn(*args, **settings.loss_kwargs())``: ``args`` names its
    positional tensors, drawn from the trained model's outputs (``chosen_logps``,
    ``rejected_logps``, ``chosen_rewards``, ``rejected_rewards``, ``chosen_nll``) and the
    batch's precomputed columns; a column the loss does not need (not in ``inputs``) may be
    passed as None. ``settings`` is the loss's settings class (drdo_ray/loss_settings.py): its
    keyword hyperparameters and its default log-prob reduction."""

    fn: Callable[..., tuple[torch.Tensor, Metrics]]
    args: tuple[str, ...]
    inputs: tuple[str, ...]  # precomputed batch columns it needs (e-DPO's Oracle ones: (K, B))
    settings: type[LossSettings]
    stage: str  # "align", or the stage that is this loss ("sft", "oracle")
    reward_head: bool  # trains a reward head beside the LM
    description: str
    reads_logits: bool = True  # False: its gradient never reaches the LM's output embedding
    terms: tuple[str, ...] = ()  # DRDO's terms it includes: "distill", "contrastive"


def _drdo_spec(terms: tuple[str, ...], description: str) -> LossSpec:
    """DRDO or an ablation: the terms kept decide the flags, the Oracle columns and the head."""
    off = {flag: False for flag in ("distill", "contrastive") if flag not in terms}
    distill = "distill" in terms
    return LossSpec(
        functools.partial(drdo_loss, **off) if off else drdo_loss,
        _DRDO_ARGS,
        _ORACLE if distill else (),
        DRDOSettings,
        "align",
        reward_head=distill,
        description=description,
        reads_logits="contrastive" in terms,
        terms=terms,
    )


def _reference_spec(
    fn: Callable[..., tuple[torch.Tensor, Metrics]],
    settings: type[LossSettings],
    description: str,
    oracle: tuple[str, ...] = (),
) -> LossSpec:
    """A loss against a reference model's log-probs (the DPO family)."""
    return LossSpec(
        fn,
        (*_PAIR, *_REF, *oracle),
        _REF + oracle,
        settings,
        "align",
        reward_head=False,
        description=description,
    )


LOSS_SPECS: dict[str, LossSpec] = {
    "drdo": _drdo_spec(
        ("distill", "contrastive"),
        "DRDO (paper Eq. 5): reward distillation from the Oracle + focal contrastive term",
    ),
    "dpo": _reference_spec(dpo_loss, DPOSettings, "DPO against a reference model"),
    "ipo": _reference_spec(ipo_loss, DPOSettings, "IPO against a reference model"),
    "edpo": _reference_spec(
        edpo_loss,
        EDPOSettings,
        "e-DPO: DPO distilling an Oracle ensemble's reward margins (worst member by default)",
        oracle=_ORACLE,
    ),
    "drdo_minus_r": _drdo_spec(
        ("contrastive",), "DRDO(-R) ablation: the contrastive term only (no Oracle, no reward head)"
    ),
    "drdo_minus_c": _drdo_spec(("distill",), "DRDO(-C) ablation: reward distillation only"),
    # The partial's α serves direct calls of LOSSES["dpo_plus_c"]; training passes the config's
    # contrastive_alpha over it.
    "dpo_plus_c": _reference_spec(
        functools.partial(
            dpo_loss, contrastive_alpha=DPOPlusCSettings.model_fields["contrastive_alpha"].default
        ),
        DPOPlusCSettings,
        "DPO(+C): DPO plus DRDO's contrastive term (α = contrastive_alpha)",
    ),
    "sft": LossSpec(
        sft_loss,
        ("chosen_logps",),
        (),
        SFTSettings,
        "sft",
        reward_head=False,
        description="supervised fine-tuning: token-mean NLL of the chosen response",
    ),
    "oracle": LossSpec(
        oracle_loss,
        ("chosen_rewards", "rejected_rewards", "chosen_nll"),
        (),
        OracleSettings,
        "oracle",
        reward_head=True,
        description="the Oracle (paper Eq. 4): Bradley-Terry on its reward head + α_o·NLL of chosen",
    ),
}

# The losses `train align --loss` accepts, in the order the CLI lists them.
ALIGN_LOSSES: tuple[str, ...] = tuple(name for name, spec in LOSS_SPECS.items() if spec.stage == "align")
# Derived views, kept for the scorer, benchmarks and tests.
LOSSES: dict[str, Callable[..., tuple[torch.Tensor, Metrics]]] = {n: s.fn for n, s in LOSS_SPECS.items()}
LOSS_INPUTS: dict[str, tuple[str, ...]] = {n: s.inputs for n, s in LOSS_SPECS.items()}
