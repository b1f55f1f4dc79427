"""How hard each of DRDO's two terms pulls on the LM trunk: the gradient of each weighted term,
its norm, and the cosine between the two.

Where the gradient is taken (``TrainConfig.term_grads_wrt``):
- ``hidden`` (default, cheap): the trunk's output, the final hidden states ``hidden_states[-1]``
  that both the LM head and the reward head read. Only the heads are back-propagated through.
  The norms compare the two pulls; the cosine, however, is 0 by construction for DRDO: the
  reward head reads only the last real token's state, whose logits score no response token, so
  the two gradients live on disjoint positions.
- ``params``: the trunk's parameters (every trainable LM parameter except an untied output
  embedding, which only the contrastive term reaches; the reward head excluded). This is the
  cosine that says whether the two updates agree; it costs two backward passes through the
  whole LM and two gradient-sized buffers, on the micro-batches where it is measured.

Computed from a forward pass already made (:func:`term_gradients_of`, the loop's logging
micro-batches) or from scratch (:func:`term_gradients`, e.g. a benchmark at step 0) with
``torch.autograd.grad(..., retain_graph=True)``: nothing is accumulated into ``.grad`` and the
graph stays usable for the training step's own backward. The distillation gradient is measured
after ``distill_trunk``'s scaling: under ``detach`` it is exactly 0.

Metrics (floats):
- ``term_grad_norm_distill``: L2 norm of the gradient of λ·mean (Δr* - Δr̂)²; 0.0 when the loss
  has no distillation term (``drdo_minus_r``).
- ``term_grad_norm_contrastive``: L2 norm of the gradient of mean -α(1-p_w)^γ(z_w - log(1-e^{z_l}));
  0.0 when the loss has no contrastive term (``drdo_minus_c``).
- ``term_grad_cosine``: cosine of the two flattened gradients; NaN when either is exactly zero
  (an absent or detached term has no direction), so it never poses as "orthogonal".

Each is the micro-batch's term before the division by ``grad_accum``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import losses
from ..config import TrainConfig
from ..models import PairOutput, pair_forward
from .stage import call_loss, pair_tensors, reduction_of, spec_of

Batch = dict[str, torch.Tensor]

# The terms each DRDO-family loss includes (drdo, drdo_minus_r, drdo_minus_c); no other loss has them.
DRDO_TERMS: dict[str, tuple[str, ...]] = {name: s.terms for name, s in losses.LOSS_SPECS.items() if s.terms}
# The metrics the diagnostics add (the loop and bench train look for them by these names).
TERM_GRAD_KEYS = ("term_grad_norm_distill", "term_grad_norm_contrastive", "term_grad_cosine")


def term_grads_apply(cfg: TrainConfig) -> bool:
    """Whether the loop computes the diagnostics: ``term_grads`` on, a DRDO-family align loss,
    and not DeepSpeed ZeRO-3 (whose parameter gathering hooks on module outputs would fire in a
    partial backward pass)."""
    zero3 = cfg.deepspeed.enabled and cfg.deepspeed.zero_stage == 3
    return cfg.term_grads and cfg.stage == "align" and bool(spec_of(cfg).terms) and not zero3


def trunk_parameters(model: Any) -> list[nn.Parameter]:
    """The shared trunk's trainable parameters of a PolicyWithRewardHead (or a plain causal LM),
    bare or wrapped by DDP / DeepSpeed (``.module``): everything but the reward head and an
    untied output embedding (a tied one is also the input embedding, so it stays)."""
    inner = getattr(model, "module", model)
    lm = getattr(inner, "lm", inner)
    skip: set[int] = set()
    head = getattr(inner, "reward_head", None)
    if head is not None:
        skip |= {id(p) for p in head.parameters()}
    output, inputs = lm.get_output_embeddings(), lm.get_input_embeddings()
    if output is not None and output.weight is not inputs.weight:
        skip |= {id(p) for p in output.parameters()}
    return [p for p in lm.parameters() if p.requires_grad and id(p) not in skip]


def _grads(term: torch.Tensor, targets: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    if not term.requires_grad:
        return [None] * len(targets)
    # allow_unused: a detached distillation term does not reach the trunk at all.
    return list(torch.autograd.grad(term, list(targets), retain_graph=True, allow_unused=True))


def _norm_and_cosine(
    d: Sequence[torch.Tensor | None], c: Sequence[torch.Tensor | None]
) -> tuple[float, float, float]:
    """Norms and cosine of two gradients given piecewise (None: zero), accumulated in float64
    piece by piece so no flattened copy is made."""
    dd = cc = dc = 0.0
    for gd, gc in zip(d, c, strict=True):
        if gd is not None:
            dd += float(gd.double().pow(2).sum())
        if gc is not None:
            cc += float(gc.double().pow(2).sum())
        if gd is not None and gc is not None:
            dc += float((gd.double() * gc.double()).sum())
    nd, nc = math.sqrt(dd), math.sqrt(cc)
    return nd, nc, (dc / (nd * nc) if nd > 0 and nc > 0 else math.nan)


def term_gradients_of(
    pair: PairOutput, batch: Batch, cfg: TrainConfig, model: Any | None = None
) -> dict[str, float]:
    """The diagnostics from a :func:`pair_forward` output made with ``keep_hidden=True`` (still
    in its autograd graph) and the batch's Oracle columns; ``cfg`` gives the loss, its
    hyperparameters and ``term_grads_wrt``; ``model`` (the one that made ``pair``) is needed
    for ``term_grads_wrt="params"``."""
    if cfg.loss not in DRDO_TERMS:
        raise ValueError(f"term gradients exist for the DRDO family only, not loss {cfg.loss!r}")
    if cfg.term_grads_wrt == "params":
        if model is None:
            raise ValueError("term_grads_wrt='params' needs the model whose parameters to measure")
        targets: list[torch.Tensor] = list(trunk_parameters(model))
    elif pair.hidden is None:
        raise ValueError("term gradients need the final hidden states: pair_forward(..., keep_hidden=True)")
    else:
        targets = [pair.hidden]
    tensors = pair_tensors(pair, batch)
    grads: dict[str, list[torch.Tensor | None]] = {}
    for term in ("distill", "contrastive"):
        if term not in DRDO_TERMS[cfg.loss]:
            grads[term] = [None] * len(targets)
            continue
        # The loss itself with one term switched off: the other, weighted exactly as in training.
        value, _ = call_loss(cfg, tensors, distill=term == "distill", contrastive=term == "contrastive")
        grads[term] = _grads(value, targets)
    return dict(zip(TERM_GRAD_KEYS, _norm_and_cosine(grads["distill"], grads["contrastive"]), strict=True))


def term_gradients(model: Any, batch: Batch, cfg: TrainConfig) -> dict[str, float]:
    """The diagnostics for ``model`` (from :func:`drdo_ray.train.loop.load_model`, whose
    ``trunk_grad_scale`` follows ``cfg.distill_trunk``; or a DDP/DeepSpeed module wrapping one)
    on one collated pair batch carrying the Oracle columns: one forward pass, no parameter
    gradients left behind. ``cfg.term_grads_wrt`` says where they are taken."""
    with torch.enable_grad():
        pair = pair_forward(
            model, batch, reduction=reduction_of(cfg), chunk_size=cfg.logps_chunk_size, keep_hidden=True
        )
        return term_gradients_of(pair, batch, cfg, model)
