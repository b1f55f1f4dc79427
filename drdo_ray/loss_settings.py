"""Each stage's and each loss's own settings, typed (pydantic; no torch, so configs validate fast).

A loss's settings class lists what that loss reads, with its defaults and limits: it is the home
of a new loss setting. :data:`SETTINGS_BY_LOSS` (and ``LOSS_SPECS[name].settings``) says which
class a loss uses; :class:`~drdo_ray.config.TrainConfig` is the flat form the YAML and the flags spell (every
class's fields side by side) and accepts a key only where its owner applies, and
``TrainConfig.loss_settings`` gives the chosen loss's settings back as its own typed object:

    SFTSettings          sft           (token-mean NLL: nothing to set)
    OracleSettings       oracle        oracle_alpha (Eq. 4's α_o), head_seed, edpo_oracles
    DRDOSettings         drdo, drdo_minus_r, drdo_minus_c
                                       alpha (Eq. 5's α), gamma, distill_weight (λ), distill_trunk,
                                       reduction (mean), term_grads, term_grads_wrt
    DPOSettings          dpo, ipo      beta, live_reference, reduction (sum)
    EDPOSettings         edpo          + edpo_reduce
    DPOPlusCSettings     dpo_plus_c    + contrastive_alpha, gamma

The three α's keep distinct names up to the loss functions' keywords: ``alpha`` (DRDO),
``oracle_alpha`` (the Oracle), ``contrastive_alpha`` (DPO(+C)). The paper's DRDO settings are
DRDOSettings' defaults, written once: :data:`PAPER_DRDO`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

Reduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class DistillTrunk:
    """How much of DRDO's distillation gradient reaches the LM trunk through the reward head:
    ``full`` (1.0, the paper), ``detach`` (0.0: the term trains the head only) or ``scaled:<f>``
    (f >= 0, finite). Written and read as that text; ``scale`` is the factor."""

    mode: Literal["full", "detach", "scaled"]
    scale: float

    @classmethod
    def parse(cls, text: str) -> DistillTrunk:
        if text == "full":
            return cls("full", 1.0)
        if text == "detach":
            return cls("detach", 0.0)
        prefix, sep, raw = text.partition(":")
        if prefix == "scaled" and sep:
            try:
                factor = float(raw)
            except ValueError:
                factor = math.nan
            if factor >= 0 and math.isfinite(factor):
                return cls("scaled", factor)
        raise ValueError(
            f"distill_trunk must be 'full', 'detach' or 'scaled:<f>' with a finite f >= 0, got {text!r}"
        )

    def __str__(self) -> str:
        return self.mode if self.mode != "scaled" else f"scaled:{self.scale!r}"


def _distill_trunk(value: Any) -> Any:
    if isinstance(value, DistillTrunk):
        return value
    if not isinstance(value, str):  # YAML reads a bare "scaled:" as a mapping
        raise ValueError(f"distill_trunk must be 'full', 'detach' or 'scaled:<f>', got {value!r}")
    return DistillTrunk.parse(value)


# A config field: given and dumped as text ("scaled:0.1"), held as a DistillTrunk.
DistillTrunkField = Annotated[
    DistillTrunk, BeforeValidator(_distill_trunk), PlainSerializer(str, return_type=str)
]


class LossSettings(BaseModel):
    """The settings one stage or loss reads. ``KEYWORDS``: {field: the loss function's keyword}
    for the fields the loss function itself takes (the others steer the model or the batch)."""

    model_config = ConfigDict(extra="forbid")

    KEYWORDS: ClassVar[dict[str, str]] = {}
    STAGE: ClassVar[str]

    def loss_kwargs(self) -> dict[str, Any]:
        return {keyword: getattr(self, name) for name, keyword in self.KEYWORDS.items()}

    @property
    def log_prob_reduction(self) -> Reduction:
        """How sequence log-probs reduce over response tokens (SFT and the Oracle: token-mean)."""
        return "mean"


class SFTSettings(LossSettings):
    """SFT: token-mean NLL of the chosen response; nothing to set."""

    STAGE: ClassVar[str] = "sft"


class OracleSettings(LossSettings):
    """The Oracle (paper Eq. 4), and e-DPO's plain Bradley-Terry Oracles."""

    STAGE: ClassVar[str] = "oracle"
    KEYWORDS: ClassVar[dict[str, str]] = {"oracle_alpha": "oracle_alpha"}

    oracle_alpha: float = Field(0.01, ge=0, le=1, description="α_o of Eq. 4: weight of the chosen NLL")
    head_seed: int = Field(0, description="seed of the reward head's initialization")
    edpo_oracles: int = Field(
        0,
        ge=0,
        description="oracle stage: 0 trains the one Oracle (Eq. 4); K trains K plain Bradley-Terry "
        "Oracles for e-DPO (oracle_alpha 0, head seeds 0..K-1)",
    )


class AlignSettings(LossSettings):
    """What every alignment loss has: the log-prob reduction over response tokens."""

    STAGE: ClassVar[str] = "align"

    reduction: Reduction = Field(description="sequence log-prob reduction over response tokens")

    @property
    def log_prob_reduction(self) -> Reduction:
        return self.reduction


class FocalSettings(LossSettings):
    """The focal exponent of DRDO's contrastive term (DRDO, DPO(+C))."""

    gamma: float = Field(2.0, ge=0, description="DRDO (and dpo_plus_c): focal exponent γ")


class DRDOSettings(AlignSettings, FocalSettings):
    """DRDO (paper Eq. 5) and its ablations; the defaults are the paper's."""

    KEYWORDS: ClassVar[dict[str, str]] = {
        "alpha": "alpha",
        "gamma": "gamma",
        "distill_weight": "distill_weight",
    }

    reduction: Reduction = Field("mean", description="token-mean log-probs keep the unlikelihood term active")
    alpha: float = Field(0.1, ge=0, description="DRDO: α, weight of the focal contrastive term (Eq. 5)")
    distill_weight: float = Field(
        1.0, ge=0, description="DRDO: λ on the distillation term (1.0 = paper Eq. 5); metrics stay unweighted"
    )
    distill_trunk: DistillTrunkField = Field(
        DistillTrunk("full", 1.0),
        description="DRDO: the distillation term's gradient into the LM trunk: full (paper), detach "
        "(it trains the reward head only) or scaled:<f> (times f >= 0; the head's gradient unchanged)",
    )
    term_grads: bool = Field(
        True,
        description="DRDO family: log each term's gradient norm on the trunk and their cosine "
        "at logging steps (not under ZeRO-3)",
    )
    term_grads_wrt: Literal["hidden", "params"] = Field(
        "hidden",
        description="where term_grads takes the gradients: the trunk output (cheap; the cosine is 0 by "
        "construction there) or the trunk parameters (two extra backward passes per logged step)",
    )


class DPOSettings(AlignSettings):
    """DPO and IPO: against a reference model's summed log-probs."""

    KEYWORDS: ClassVar[dict[str, str]] = {"beta": "beta"}

    reduction: Reduction = Field("sum", description="DPO's convention: summed log-probs")
    beta: float = Field(
        0.1,
        gt=0,
        description="DPO, IPO, e-DPO: β, the implicit reward's scale (larger keeps the policy nearer the reference)",
    )
    live_reference: str | None = Field(
        None, description="DPO family: a reference model held live instead of precomputed columns"
    )


class EDPOSettings(DPOSettings):
    """e-DPO: DPO distilling an Oracle ensemble's reward margins."""

    KEYWORDS: ClassVar[dict[str, str]] = {"beta": "beta", "edpo_reduce": "reduce"}

    edpo_reduce: Literal["max", "mean"] = Field(
        "max", description="e-DPO: over the Oracles, the worst member's loss (max) or the mean"
    )


class DPOPlusCSettings(DPOSettings, FocalSettings):
    """DPO(+C): DPO plus DRDO's focal contrastive term."""

    KEYWORDS: ClassVar[dict[str, str]] = {
        "beta": "beta",
        "contrastive_alpha": "contrastive_alpha",
        "gamma": "gamma",
    }

    contrastive_alpha: float = Field(0.1, ge=0, description="dpo_plus_c: weight of the added focal term")


# Which settings each loss (and training stage) reads, by name: the loss registry's torch-free half
# (drdo_ray.losses.LOSS_SPECS adds the functions; test_loss_registry checks that the two agree).
SETTINGS_BY_LOSS: dict[str, type[LossSettings]] = {
    "drdo": DRDOSettings,
    "dpo": DPOSettings,
    "ipo": DPOSettings,
    "edpo": EDPOSettings,
    "drdo_minus_r": DRDOSettings,
    "drdo_minus_c": DRDOSettings,
    "dpo_plus_c": DPOPlusCSettings,
    "sft": SFTSettings,
    "oracle": OracleSettings,
}

# Every class whose fields TrainConfig carries (flat), in the order the config lists them.
LOSS_SETTINGS: tuple[type[LossSettings], ...] = (
    SFTSettings,
    OracleSettings,
    DRDOSettings,
    DPOSettings,
    EDPOSettings,
    DPOPlusCSettings,
)


def stage_fields(stage: str) -> frozenset[str]:
    """Every field the settings of ``stage`` hold (align: those of every alignment loss)."""
    return frozenset(name for cls in LOSS_SETTINGS if stage == cls.STAGE for name in cls.model_fields)


# The paper's DRDO (α 0.1, γ 2, λ 1, trunk full, token-mean log-probs): DRDOSettings' defaults.
PAPER_DRDO = DRDOSettings()
