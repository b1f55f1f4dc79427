"""What a stage's config implies for the model and its log-probs (no Ray, no torch engine):
shared by the loop, its data checks and the diagnostics."""

from __future__ import annotations

from ..config import TrainConfig


def uses_reward_head(cfg: TrainConfig) -> bool:
    return cfg.stage == "oracle" or (cfg.stage == "align" and cfg.loss in ("drdo", "drdo_minus_c"))


def reduction_of(cfg: TrainConfig) -> str:
    if cfg.reduction:
        return cfg.reduction
    # METHOD.md: token-mean log-probs make DRDO's unlikelihood term active; DPO's convention is sum.
    return "mean" if cfg.stage != "align" or (cfg.loss or "").startswith("drdo") else "sum"
