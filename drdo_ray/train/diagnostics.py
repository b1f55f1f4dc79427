"""How hard each of DRDO's two terms pulls on the LM: the gradient of each weighted term with
respect to the trunk's output (the final hidden states, ``hidden_states[-1]``: what both the LM
head and the reward head read), their norms and the cosine between them.

Computed from a forward pass already made (:func:`term_gradients_of`, the loop's logging
micro-batches) or from scratch (:func:`term_gradients`, e.g. a benchmark at step 0) with
``torch.autograd.grad(..., retain_graph=True)``: nothing is accumulated into ``.grad`` and the
graph stays usable for the training step's own backward. The distillation gradient is measured
after ``distill_trunk``'s scaling: under ``detach`` it is exactly 0.

Metrics (floats):
- ``term_grad_norm_distill``: ‖∂(λ·mean (Δr* - Δr̂)²)/∂h‖₂; 0.0 when the loss has no
  distillation term (``drdo_minus_r``).
- ``term_grad_norm_contrastive``: ‖∂(mean -α(1-p_w)^γ(z_w - log(1-e^{z_l})))/∂h‖₂; 0.0 when the
  loss has no contrastive term (``drdo_minus_c``).
- ``term_grad_cosine``: cosine of the two flattened gradients; NaN when either is exactly zero
  (an absent or detached term has no direction), so it never poses as "orthogonal".

Each is the micro-batch's term before the division by ``grad_accum``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import losses
from ..config import TrainConfig
from ..models import PairOutput, pair_forward
from .stage import call_loss, pair_tensors, reduction_of, spec_of

Batch = dict[str, torch.Tensor]

# The terms each DRDO-family loss includes (drdo, drdo_minus_r, drdo_minus_c); no other loss has them.
DRDO_TERMS: dict[str, tuple[str, ...]] = {name: s.terms for name, s in losses.LOSS_SPECS.items() if s.terms}
TERM_GRAD_KEYS = ("term_grad_norm_distill", "term_grad_norm_contrastive", "term_grad_cosine")


def term_grads_apply(cfg: TrainConfig) -> bool:
    """Whether the loop computes the diagnostics: ``term_grads`` on, a DRDO-family align loss,
    and not DeepSpeed ZeRO-3 (whose parameter gathering hooks on module outputs would fire in a
    partial backward pass over the heads)."""
    zero3 = cfg.deepspeed.enabled and cfg.deepspeed.zero_stage == 3
    return cfg.term_grads and cfg.stage == "align" and bool(spec_of(cfg).terms) and not zero3


def _grad(term: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    if not term.requires_grad:
        return torch.zeros_like(hidden, dtype=torch.float64)
    (g,) = torch.autograd.grad(term, hidden, retain_graph=True, allow_unused=True)
    # allow_unused: a detached distillation term does not reach the trunk at all.
    return torch.zeros_like(hidden, dtype=torch.float64) if g is None else g.double()


def term_gradients_of(pair: PairOutput, batch: Batch, cfg: TrainConfig) -> dict[str, float]:
    """The diagnostics from a :func:`pair_forward` output made with ``keep_hidden=True`` (still
    in its autograd graph) and the batch's Oracle columns; ``cfg`` gives the loss and its
    hyperparameters."""
    if cfg.loss not in DRDO_TERMS:
        raise ValueError(f"term gradients exist for the DRDO family only, not loss {cfg.loss!r}")
    if pair.hidden is None:
        raise ValueError("term gradients need the final hidden states: pair_forward(..., keep_hidden=True)")
    tensors = pair_tensors(pair, batch)
    grads: dict[str, torch.Tensor] = {}
    for term in ("distill", "contrastive"):
        if term not in DRDO_TERMS[cfg.loss]:
            grads[term] = torch.zeros((), dtype=torch.float64)
            continue
        # The loss itself with one term switched off: the other, weighted exactly as in training.
        value, _ = call_loss(cfg, tensors, distill=term == "distill", contrastive=term == "contrastive")
        grads[term] = _grad(value, pair.hidden)
    d, c = grads["distill"].flatten(), grads["contrastive"].flatten()
    nd, nc = float(d.norm()), float(c.norm())
    cosine = float(d @ c) / (nd * nc) if nd > 0 and nc > 0 else math.nan
    return {
        "term_grad_norm_distill": nd,
        "term_grad_norm_contrastive": nc,
        "term_grad_cosine": cosine,
    }


def term_gradients(model: Any, batch: Batch, cfg: TrainConfig) -> dict[str, float]:
    """The diagnostics for ``model`` (from :func:`drdo_ray.train.loop.load_model`, whose
    ``trunk_grad_scale`` follows ``cfg.distill_trunk``; or a DDP/DeepSpeed module wrapping one)
    on one collated pair batch carrying the Oracle columns: one forward pass, no parameter
    gradients left behind."""
    with torch.enable_grad():
        pair = pair_forward(
            model, batch, reduction=reduction_of(cfg), chunk_size=cfg.logps_chunk_size, keep_hidden=True
        )
        return term_gradients_of(pair, batch, cfg)
