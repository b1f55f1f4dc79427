"""Settings of `drdo-ray bench quality` and its tuning grids."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..config import StageConfig, TrainConfig

QUALITY_METHODS = ("drdo", "dpo", "ipo", "edpo")
# The tuning grids of `bench quality`: small, fixed, the same size order for every method. The DPO
# family shares one β grid (DPO's used to stop at 0.3, where its best value sat: at the grid's edge).
# DRDO's covers the paper's α sweep {0.1, 1} and how much the distillation term moves the trunk.
QUALITY_GRID: dict[str, list[dict[str, Any]]] = {
    "dpo": [{"beta": b} for b in (0.1, 0.3, 1.0)],
    "ipo": [{"beta": b} for b in (0.1, 0.3, 1.0)],
    "edpo": [{"beta": b} for b in (0.1, 0.3, 1.0)],
    "drdo": [
        {"alpha": a, "distill_weight": w, "distill_trunk": t}
        for a in (0.1, 1.0)
        for w, t in ((1.0, "full"), (0.1, "full"), (1.0, "scaled:0.1"), (1.0, "detach"))
    ],
}
QUALITY_QUICK_GRID: dict[str, list[dict[str, Any]]] = {
    "dpo": [{"beta": 0.1}],
    "ipo": [{"beta": 0.3}],
    "edpo": [{"beta": 0.3}],
    "drdo": [
        {"alpha": 0.1, "distill_weight": 1.0, "distill_trunk": "full"},
        {"alpha": 1.0, "distill_weight": 1.0, "distill_trunk": "detach"},
    ],
}
QUALITY_QUICK: dict[str, Any] = {
    "seeds": 1,
    "shares": [0.0, 0.6],
    "tune_share": 0.6,
    "pairs": 96,
    "heldout_pairs": 64,
    "pool_size": 8,
    "sft_rows": 512,
    "sft_steps": 150,
    "epochs": 2,
    "oracle_epochs": 2,
    "samples_per_prompt": 1,
    "bootstrap": 100,
    "diagnostic_batches": 1,
    "methods": ["drdo", "dpo", "edpo"],
}


class BenchQualityConfig(StageConfig):
    """`drdo-ray bench quality`: alignment quality on a synthetic task whose true reward is a known
    program (drdo_ray/bench/synthetic.py). SFT -> a fixed set of deterministic pairs plus added
    non-deterministic ones -> Oracle(s) -> every method tuned on validation prompts -> samples of
    test prompts scored with the true reward. ``quick`` shrinks everything for the test suite."""

    out: str = Field("bench_quality", description="output folder for bench_quality.json and .png")
    quick: bool = Field(False, description="a minutes-long smoke run: 1 seed, shares 0 and 0.6, tiny grid")
    scale: float = Field(
        1.0, gt=0, description="multiplies pairs, SFT rows and SFT steps; > 1 adds share 0.8"
    )
    seeds: int = Field(3, gt=0, description="seeds 0..N-1: data, model init, sampling")
    shares: list[float] | None = Field(
        None,
        description="non-deterministic shares of all pairs; default 0, 0.3, 0.6 (and 0.8 with scale > 1)",
    )
    tune_share: float = Field(0.3, ge=0, lt=1, description="the share at which seed 0 tunes every method")
    pairs_source: Literal["offpolicy", "onpolicy"] = Field(
        "offpolicy",
        description="responses of the pairs: another generator than the SFT policy, or its samples",
    )
    flip: float = Field(0.1, ge=0, le=1, description="share of deterministic labels swapped after labelling")
    tie_eps: float = Field(0.25, ge=0, description="|Δr*| at most this is a non-deterministic pair")
    bt_scale: float = Field(1.0, gt=0, description="deterministic labels: p = σ(Δr* / bt_scale)")
    pool_size: int = Field(64, ge=2, description="candidate responses per prompt that pairs are drawn from")
    # Sizes.
    sft_rows: int = Field(2048, gt=0)
    pairs: int = Field(768, gt=0, description="deterministic training pairs (the same at every share)")
    heldout_pairs: int = Field(
        512, gt=0, description="deterministic validation-prompt pairs: Oracle accuracy"
    )
    samples_per_prompt: int = Field(4, gt=0)
    temperatures: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.7, 0.9], min_length=1)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)
    methods: list[Literal[QUALITY_METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(QUALITY_METHODS), min_length=1
    )
    # Model.
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    # Training: the same batches, epochs and learning rate for every alignment method.
    batch_size: int = Field(32, gt=0, description="rows (SFT) or pairs per optimizer step")
    sft_steps: int = Field(600, gt=0)
    epochs: int = Field(
        4, gt=0, description="alignment epochs over the pairs (DPO's train accuracy plateaus)"
    )
    oracle_epochs: int = Field(4, gt=0)
    sft_lr: float = Field(2e-3, gt=0)
    oracle_lr: float = Field(1e-3, gt=0)
    align_lr: float = Field(5e-4, gt=0, description="alignment lr of every method unless `lr` names it")
    lr: dict[str, float] = Field(
        default_factory=dict, description="per-method alignment lr, e.g. lr.dpo=1e-4"
    )
    reduction: dict[str, Literal["mean", "sum"]] = Field(
        default_factory=dict, description="per method; default: mean for drdo, sum for the DPO family"
    )
    gamma: float = Field(2.0, ge=0, description="DRDO's focal γ where a grid entry does not set it")
    warmup_steps: int = Field(10, ge=0)
    grid: dict[str, list[dict[str, Any]]] | None = Field(
        None, description="per-method tuning grid (lists of TrainConfig overrides); default: QUALITY_GRID"
    )
    diagnostic_batches: int = Field(4, gt=0, description="batches averaged for DRDO's step-0 term gradients")
    bootstrap: int = Field(2000, ge=0)
    threads: int = Field(1, gt=0, description="torch CPU threads (1: the tiny model gains nothing from more)")

    def model_post_init(self, _: Any) -> None:
        if self.shares is not None and any(not 0 <= f < 1 for f in self.shares):
            raise ValueError("shares must lie in [0, 1)")
        if "drdo" not in self.methods:
            raise ValueError("methods must include drdo (win rates are DRDO's)")
        unknown = sorted((set(self.lr) | set(self.grid or {})) - set(QUALITY_METHODS))
        if unknown:
            raise ValueError(f"lr or grid names unknown methods: {', '.join(unknown)}")
        if self.quick:
            for key, value in QUALITY_QUICK.items():
                if key not in self.model_fields_set:
                    setattr(self, key, value)
        if self.tune_share not in self.effective_shares():
            raise ValueError(
                f"tune_share {self.tune_share:g} is not one of the shares {self.effective_shares()}"
            )

    def effective_shares(self) -> list[float]:
        if self.shares is not None:
            return list(self.shares)
        return [0.0, 0.3, 0.6] + ([0.8] if self.scale > 1 else [])

    def grid_of(self, method: str) -> list[dict[str, Any]]:
        grid = (self.grid or {}).get(method) or (QUALITY_QUICK_GRID if self.quick else QUALITY_GRID)[method]
        for entry in grid:
            TrainConfig.model_validate(
                {"stage": "align", "loss": method, "model": "-", "data": "-", "run_dir": "-", **entry}
            )
        return grid

    def lr_of(self, method: str) -> float:
        return self.lr.get(method, self.align_lr)
