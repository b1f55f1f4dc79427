"""Settings of `drdo-ray bench quality`: the protocol's sizes, the rows it trains and their tuning
ladders. The rows:

- tuned methods (``METHODS``): each starts from a 4-cell grid and follows the edge rule of
  quality_tuning.py on the tuning seeds;
- controls (``CONTROLS``): a method's recipe with fixed or borrowed settings (the paper's DRDO,
  DPO again with another training seed, DRDO distilling the true reward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import StageConfig
from ..loss_settings import PAPER_DRDO as PAPER_DRDO_SETTINGS
from .quality_tuning import Axis

# Ladders of every tuned setting, shared by the methods that use them (geometric where the
# setting is a scale). The learning rate is an axis of every method, on the same ladder.
LR = (1.5e-5, 5e-5, 1.5e-4, 5e-4, 1.5e-3, 5e-3, 1.5e-2)
BETA = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
ALPHA = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
GAMMA = (0.0, 1.0, 2.0, 5.0, 10.0)  # the paper's sweep, and one more

_LR2 = Axis("lr", LR, (1.5e-4, 5e-4))


@dataclass(frozen=True)
class Method:
    """How a row trains: the stage, the loss and log-prob reduction, what it distills (``oracle``:
    the Oracle's rewards, ``edpo``: the e-DPO Oracles', ``true``: r* itself, ``none``) and the
    axes it is tuned on (a 4-cell start grid for every method)."""

    stage: Literal["sft", "align"]
    loss: str | None
    reduction: Literal["mean", "sum"] | None
    distills: Literal["oracle", "edpo", "true", "none"]
    axes: tuple[Axis, ...]
    description: str


METHODS: dict[str, Method] = {
    "sft_chosen": Method(
        "sft",
        None,
        None,
        "none",
        # Its only setting is the learning rate: four rungs of the shared ladder.
        (Axis("lr", LR, (5e-5, 1.5e-4, 5e-4, 1.5e-3)),),
        "SFT on the pairs' chosen responses, same steps: the imitation control",
    ),
    "dpo": Method("align", "dpo", "sum", "none", (_LR2, Axis("beta", BETA, (0.3, 1.0))), "DPO"),
    "ipo": Method("align", "ipo", "sum", "none", (_LR2, Axis("beta", BETA, (0.3, 1.0))), "IPO"),
    "edpo": Method(
        "align",
        "edpo",
        "sum",
        "edpo",
        (_LR2, Axis("beta", BETA, (0.3, 1.0))),
        "e-DPO (3 Oracles, worst member)",
    ),
    "drdo": Method(
        "align",
        "drdo",
        "mean",
        "oracle",
        (_LR2, Axis("alpha", ALPHA, (0.1, 1.0))),
        "DRDO, distillation through the whole trunk (the paper's form), token-mean log-probs",
    ),
    "drdo_sum": Method(
        "align",
        "drdo",
        "sum",
        "oracle",
        (_LR2, Axis("alpha", ALPHA, (0.1, 1.0))),
        "DRDO as drdo, summed log-probs (the paper's reduction)",
    ),
    "drdo_minus_r": Method(
        "align",
        "drdo_minus_r",
        "mean",
        "none",
        # Its α only scales the loss, which Adam undoes: the focal γ is its setting.
        (_LR2, Axis("gamma", GAMMA, (1.0, 2.0))),
        "DRDO(-R): the focal preference term alone (no Oracle, no reward head)",
    ),
}
TUNED = tuple(METHODS)

# The paper's DRDO (Table 5 / Eq. 5): α 0.1, γ 2, λ 1, distillation through the whole trunk; its one
# home is loss_settings.PAPER_DRDO (the reduction comes from the row's recipe).
PAPER_DRDO: dict[str, Any] = PAPER_DRDO_SETTINGS.model_dump(
    mode="json", include={"alpha", "gamma", "distill_weight", "distill_trunk"}
)


@dataclass(frozen=True)
class Control:
    """A row that trains with a method's recipe (``method``) and settings it does not tune:
    ``settings`` is ``"paper"`` (PAPER_DRDO at ``paper_lr``) or the tuned method whose values it
    borrows; ``distills`` overrides what it distills; ``train_seed_offset`` moves the training seed
    (batch order, initialisation) off the data seed."""

    method: str
    settings: str
    description: str
    distills: Literal["oracle", "true"] | None = None
    train_seed_offset: int = 0


CONTROLS: dict[str, Control] = {
    "drdo_paper": Control("drdo", "paper", "the paper's DRDO, untuned (α 0.1, γ 2, λ 1, full trunk), mean"),
    "drdo_paper_sum": Control("drdo_sum", "paper", "the paper's DRDO, untuned, summed log-probs"),
    "drdo_true_r": Control("drdo", "drdo", "tuned DRDO distilling the true r* (a perfect Oracle)", "true"),
    # The paper's Table 6 question at the best preference-only settings: the same loss and steps,
    # plus the distillation term (λ 1) through the whole trunk.
    "minus_r_plus_distill": Control(
        "drdo", "drdo_minus_r", "tuned DRDO(-R)'s settings with the distillation term added back (full DRDO)"
    ),
    "dpo_reseed": Control(
        "dpo",
        "dpo",
        "tuned DPO, another training seed on the same data: the noise floor",
        train_seed_offset=7919,
    ),
}

ARMS = ("ties", "lowmargin")


def condition_key(arm: str | None, share: float) -> str:
    """A condition's name: ``0`` for deterministic pairs only (shared by both arms), else
    ``<arm>:<share>``, e.g. ``lowmargin:0.3``."""
    return "0" if share == 0 else f"{arm}:{share:g}"


QUALITY_QUICK: dict[str, Any] = {
    "seeds": [0],
    "tune_seeds": [100],
    "shares": [0.0, 0.6],
    "tune_share": 0.6,
    "pairs": 96,
    "heldout_pairs": 64,
    "pool_size": 8,
    "sft_rows": 512,
    "epochs": 2,
    "oracle_epochs": 2,
    "samples_per_prompt": 1,
    "bootstrap": 100,
    "diagnostic_batches": 1,
    "max_extensions": 0,
    "methods": ["sft_chosen", "dpo", "edpo", "drdo", "drdo_minus_r"],
}


# The online regime's own defaults (under whatever the caller sets): fresh report seeds, and the rows
# the offline verdict rests on (DRDO tuned and the paper's, DPO and its noise floor, DRDO(-R), the
# imitation control, DRDO(-R) with the distillation term added back).
ONLINE_DEFAULTS: dict[str, Any] = {
    "seeds": [20, 21, 22, 23, 24],
    "methods": ["sft_chosen", "dpo", "drdo", "drdo_minus_r"],
    "controls": ["drdo_paper", "minus_r_plus_distill", "dpo_reseed"],
}
ONLINE_QUICK: dict[str, Any] = {
    "methods": ["sft_chosen", "dpo", "drdo"],
    "controls": [],
    "online_rounds": 2,
    "online_prompts": 64,
    "online_samples": 2,
}
# What the online rows are called where their offline name would mislead.
ONLINE_NAMES = {"sft_chosen": "online_sft_best"}


def online_row(row: str) -> str:
    """The online regime's name of a row: ``online_<row>`` (SFT on the chosen responses becomes SFT
    on the Oracle's best sample, ``online_sft_best``)."""
    return ONLINE_NAMES.get(row, f"online_{row}")


class BenchQualityConfig(StageConfig):
    """`drdo-ray bench quality`: alignment quality on a synthetic task whose true reward is a known
    program (drdo_ray/bench/synthetic.py). Per seed: SFT -> N training pairs, of which a share is
    non-deterministic (exact ties, or low-margin pairs) -> Oracle(s) -> every row trained for the
    same steps -> samples of test prompts scored with the true reward. Methods are tuned on
    separate tuning seeds and validation prompts; ``quick`` shrinks everything for the test suite."""

    out: str = Field("bench_quality", description="output folder for bench_quality.json and .png")
    quick: bool = Field(False, description="a minutes-long smoke run: 1 seed, shares 0 and 0.6, small grids")
    seeds: list[int] = Field(
        default_factory=lambda: [10, 11, 12, 13, 14],
        min_length=1,
        description="the seeds every reported figure comes from (data, SFT model, sampling)",
    )
    tune_seeds: list[int] = Field(
        default_factory=lambda: [100, 101],
        min_length=1,
        description="the seeds tuning runs on (validation prompts, the mean over them); never reported",
    )
    shares: list[float] = Field(
        default_factory=lambda: [0.0, 0.3, 0.6],
        min_length=1,
        description="non-deterministic shares of the training pairs (they replace deterministic ones); "
        "0 must be one of them",
    )
    arms: list[Literal[ARMS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(ARMS),
        min_length=1,
        description="what the non-deterministic pairs are: exact ties with coin-flip labels, or "
        "low-margin pairs with Bradley-Terry labels",
    )
    tune_arm: Literal[ARMS] = Field("lowmargin", description="the arm tuning runs at")  # type: ignore[valid-type]
    tune_share: float = Field(0.3, ge=0, lt=1, description="the share tuning runs at")
    pairs: int = Field(768, gt=0, description="training pairs at every share (fixed steps)")
    deterministic_margin: float = Field(1.5, gt=0, description="deterministic pairs: |Δr*| at least this")
    lowmargin_band: list[float] = Field(
        default_factory=lambda: [0.5, 1.0],
        min_length=2,
        max_length=2,
        description="low-margin pairs: |Δr*| within this band, LO,HI (r* moves in steps of 0.5)",
    )
    flip: float = Field(0.1, ge=0, le=1, description="share of deterministic labels swapped after labelling")
    bt_scale: float = Field(1.0, gt=0, description="labels: p(first preferred) = σ(Δr* / bt_scale)")
    pool_size: int = Field(64, ge=2, description="candidate responses per prompt that pairs are drawn from")
    sft_rows: int = Field(2048, gt=0)
    sft_steps: int = Field(150, gt=0, description="SFT steps: a weak start, so alignment has room to gain")
    heldout_pairs: int = Field(512, gt=0, description="validation-prompt pairs per kind: Oracle accuracy")
    samples_per_prompt: int = Field(4, gt=0)
    temperatures: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.7, 0.9], min_length=1)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)
    methods: list[Literal[TUNED]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(TUNED), min_length=1, description="tuned rows (dpo is the baseline)"
    )
    controls: list[Literal[tuple(CONTROLS)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CONTROLS), description="control rows"
    )
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    # Training: the same batches, epochs and steps for every row.
    batch_size: int = Field(32, gt=0, description="rows (SFT) or pairs per optimizer step")
    epochs: int = Field(4, gt=0, description="passes over the training pairs, for every row")
    oracle_epochs: int = Field(4, gt=0)
    sft_lr: float = Field(2e-3, gt=0)
    oracle_lr: float = Field(1e-3, gt=0)
    paper_lr: float = Field(5e-4, gt=0, description="learning rate of the untuned paper rows")
    warmup_steps: int = Field(10, ge=0)
    max_extensions: int = Field(6, ge=0, description="times the edge rule may extend one axis")
    diagnostic_batches: int = Field(4, gt=0, description="batches averaged for DRDO's step-0 term gradients")
    bootstrap: int = Field(2000, ge=0, description="seed-bootstrap replicates (a secondary interval)")
    threads: int = Field(1, gt=0, description="torch CPU threads (1: the tiny model gains nothing from more)")
    regime: Literal["offline", "online"] = Field(
        "offline",
        description="offline: the conditions above; online: every row also trains in rounds on its own "
        "samples, labelled by the Oracle trained once on the deterministic pairs",
    )
    tuned_from: str | None = Field(
        None,
        description="online regime: an offline bench_quality.json whose tuned settings the rows take "
        "(its tuning is not run again); without it the offline tuning runs first",
    )
    online_rounds: int = Field(
        3, gt=0, description="online regime: rounds of sample -> score -> pairs -> train"
    )
    online_prompts: int = Field(
        256,
        gt=0,
        description="online regime: train prompts a round samples (drawn with replacement), one pair "
        "each; 3 rounds x 256 train for the steps of the offline 768 pairs",
    )
    online_samples: int = Field(4, ge=2, description="online regime: samples per prompt (best vs worst)")
    online_temperature: float = Field(
        1.0, gt=0, description="online regime: the policy's sampling temperature"
    )
    online_oracle: Literal["trained", "true"] = Field(
        "trained",
        description="online regime: what labels the rounds' samples: the Oracle trained on the "
        "deterministic pairs, or r* itself (a perfect Oracle: the control that separates online "
        "learning from the Oracle's errors)",
    )

    @model_validator(mode="before")
    @classmethod
    def _quick_defaults(cls, data: Any) -> Any:
        # The quick run's sizes, under whatever the caller set explicitly.
        if not isinstance(data, dict):
            return data
        online = data.get("regime") == "online"
        defaults = {**(ONLINE_DEFAULTS if online else {}), **(QUALITY_QUICK if data.get("quick") else {})}
        if online and data.get("quick"):
            defaults.update(ONLINE_QUICK)
        return {**defaults, **data}

    @model_validator(mode="after")
    def _check(self) -> BenchQualityConfig:
        problems = []
        if overlap := sorted(set(self.seeds) & set(self.tune_seeds)):
            problems.append(
                f"tuning seeds {overlap} are also report seeds: tuning and reporting use disjoint seeds"
            )
        if any(not 0 <= s < 1 for s in self.shares) or 0.0 not in self.shares:
            problems.append("shares must lie in [0, 1) and include 0 (the deterministic-only baseline)")
        if self.tune_share not in self.shares:
            problems.append(f"tune_share {self.tune_share:g} is not one of the shares {self.shares}")
        if self.tune_arm not in self.arms:
            problems.append(f"tune_arm {self.tune_arm} is not one of the arms {self.arms}")
        lo, hi = self.lowmargin_band
        if not 0 < lo <= hi < self.deterministic_margin:
            problems.append(
                f"lowmargin_band {list(self.lowmargin_band)} must lie in (0, deterministic_margin "
                f"{self.deterministic_margin:g})"
            )
        if "dpo" not in self.methods:
            problems.append("methods must include dpo (every row is compared with it)")
        for name in self.controls:
            needs = CONTROLS[name].settings
            if needs != "paper" and needs not in self.methods:
                problems.append(f"control {name} uses tuned {needs}: add {needs} to methods")
        if self.regime == "online" and "edpo" in self.methods:
            problems.append("the online regime does not run edpo (its Oracles score offline pairs only)")
        if self.tuned_from and self.regime != "online":
            problems.append("tuned_from is a setting of the online regime")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rows(self) -> list[str]:
        """Every trained row, in report order."""
        return [*self.methods, *self.controls]
