"""What a stage's config implies (no Ray, no engine): which loss, whether the model has a reward
head, which log-prob reduction, and the one way a loss is called. Per-loss facts come from the
one registry, ``drdo_ray.losses.LOSS_SPECS``, and the loss's own settings
(``TrainConfig.loss_settings``); shared by the loop, its data checks and the diagnostics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..config import TrainConfig
from ..losses import LOSS_SPECS, LossSpec
from ..models import PairOutput


def spec_of(cfg: TrainConfig) -> LossSpec:
    """The loss a stage trains with: ``cfg.loss`` for align, the stage's own for sft / oracle."""
    if cfg.stage != "align":
        return LOSS_SPECS[cfg.stage]
    if cfg.loss is None:
        raise ValueError("the align stage needs a loss")
    return LOSS_SPECS[cfg.loss]


def uses_reward_head(cfg: TrainConfig) -> bool:
    return spec_of(cfg).reward_head


def reduction_of(cfg: TrainConfig) -> str:
    """The log-prob reduction over response tokens: the loss's setting (its default: mean for the
    DRDO family, sum for the DPO family); token-mean for SFT and the Oracle."""
    return cfg.loss_settings.log_prob_reduction


def loss_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The loss's keyword hyperparameters, from its own settings."""
    return cfg.loss_settings.loss_kwargs()


def pair_tensors(pair: PairOutput, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """Everything a pair loss may take by name: the batch's precomputed columns and the model's
    log-probs, rewards and chosen NLL. A model without a reward head (DRDO(-R)) reports its
    log-probs as "rewards", detached, for the reward-accuracy metric only."""
    zw, zl = pair.chosen_logps, pair.rejected_logps
    return {
        **batch,
        "chosen_logps": zw,
        "rejected_logps": zl,
        "chosen_rewards": pair.chosen_rewards if pair.chosen_rewards is not None else zw.detach(),
        "rejected_rewards": pair.rejected_rewards if pair.rejected_rewards is not None else zl.detach(),
        "chosen_nll": pair.chosen_nll,
    }


def call_loss(
    cfg: TrainConfig, tensors: Mapping[str, torch.Tensor | None], **overrides: Any
) -> tuple[torch.Tensor, dict[str, float]]:
    """``fn(*args, **hyperparameters)`` for the stage's loss; a tensor the loss may do without
    (not in its ``inputs``) is passed as None when absent. ``overrides`` replace keywords."""
    spec = spec_of(cfg)
    return spec.fn(*(tensors.get(name) for name in spec.args), **(loss_kwargs(cfg) | overrides))
