"""Typed settings for every stage (pydantic). A stage's values come, lowest to highest
precedence, from: the model defaults, a YAML file (``--config``; either flat or with a
section named after the stage), the command's flags, then ``--set key=value`` overrides
(dotted keys for nested fields; values parsed as YAML, so ``--set max_length=2048`` is an int)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError

SOURCE_NAMES = ("ultrafeedback", "ultrafeedback_cleaned", "tldr", "tldr_sft", "cnn_dailymail", "alpaca_eval")


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrepareConfig(StageConfig):
    """`drdo-ray data prepare`."""

    source: Literal[SOURCE_NAMES]  # type: ignore[valid-type]
    input: str = Field(description="a local/remote path, 'sample' for the shipped sample, or a hub id")
    out: str
    hub_split: str | None = None
    streaming: bool | None = None
    tldr_split: Literal["easy", "hard", "full"] = "full"
    tokenizer: str | None = None
    max_prompt_length: int = Field(512, gt=0)
    max_length: int = Field(1024, gt=0)
    featurize_actors: int = Field(1, gt=0, description="tokenizer actors (Ray Data actor pool size)")


class TinyModelConfig(StageConfig):
    """`drdo-ray models tiny`."""

    out: str
    seed: int = 0
    arch: Literal["llama", "opt"] = "llama"
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    vocab_size: int = Field(512, gt=259)


C = TypeVar("C", bound=StageConfig)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {dotted}: {key} is not a section")
    node[leaf] = value


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
        path = Path(config_file)
        if not path.is_file():
            raise UserError(f"config file not found: {config_file}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {config_file} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise UserError(f"config file {config_file} must hold a mapping")
        if section and isinstance(loaded.get(section), dict):
            loaded = loaded[section]
        data.update(loaded)
    data.update({k: v for k, v in (flags or {}).items() if v is not None})
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw else "")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in err.errors())
        raise UserError(f"invalid {cls.__name__}: {problems}") from None


class ScoreConfig(StageConfig):
    """`drdo-ray score`: Oracle rewards (and reference log-probs) for every row of a prepared dataset."""

    data: str = Field(description="a prepared dataset folder (holding data/ and stats.json)")
    out: str
    oracles: list[str] = Field(default_factory=list, description="one Oracle, or K for an e-DPO ensemble")
    reference: str | None = Field(None, description="reference (SFT) model for ref_*_logps")
    reduction: Literal["mean", "sum"] = "sum"
    batch_size: int = Field(16, gt=0)
    num_actors: int = Field(1, gt=0)
    num_gpus_per_actor: float | None = Field(None, ge=0, description="default: 1 where CUDA exists, else 0")
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    force: bool = False


LossName = Literal["drdo", "dpo", "ipo", "edpo", "drdo_minus_r", "drdo_minus_c", "dpo_plus_c"]


class DeepSpeedSettings(StageConfig):
    enabled: bool = False
    zero_stage: Literal[0, 1, 2, 3] = 2
    overlap_comm: bool = False
    reduce_bucket_size: int = Field(500_000_000, gt=0)
    allgather_bucket_size: int = Field(500_000_000, gt=0)


class TrainConfig(StageConfig):
    """`drdo-ray train {sft,oracle,align}`: one schema for every stage and loss."""

    stage: Literal["sft", "oracle", "align"]
    loss: LossName | None = Field(None, description="align only")
    model: str = Field(description="model folder or hub id to start from")
    data: str = Field(description="prepared (sft, oracle) or scored (align) dataset folder")
    run_dir: str = Field(description="run directory (local or s3://): train/<name>/ and models/<name>/ land here")
    name: str | None = Field(None, description="run name; default <stage>[-<loss>]; a rerun with the same name resumes")
    # Batch: global batch = micro_batch_size x grad_accum x num_workers.
    micro_batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    global_batch_size: int | None = Field(None, gt=0, description="checked against the product above when set")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; default: epochs over the data")
    epochs: int = Field(1, gt=0)
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    # Loss hyperparameters (METHOD.md defaults).
    reduction: Literal["mean", "sum"] | None = Field(None, description="default: mean for DRDO family, sum for DPO family")
    alpha: float = Field(0.1, ge=0)
    gamma: float = Field(2.0, ge=0)
    beta: float = Field(0.1, gt=0)
    contrastive_alpha: float = Field(0.1, ge=0)
    edpo_reduce: Literal["max", "mean"] = "max"
    oracle_alpha: float = Field(0.01, ge=0, le=1)
    ensemble: int = Field(1, gt=0, description="oracle stage: K members with head seeds 0..K-1 (plain Bradley-Terry)")
    head_seed: int = 0
    live_reference: str | None = Field(None, description="DPO family: a reference model held live instead of precomputed columns")
    # Engine and cluster.
    num_workers: int = Field(2, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    bf16: bool | None = Field(None, description="default: on with GPUs")
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    gradient_checkpointing: bool = False
    padding_side: Literal["right", "left"] = "right"
    # Fault tolerance, checkpoints, logging.
    checkpoint_every: int = Field(50, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    max_failures: int = Field(1, ge=-1)
    max_bad_steps: int = Field(5, ge=0, description="consecutive non-finite losses tolerated before stopping")
    log_every: int = Field(1, gt=0)
    seed: int = 0
    shuffle: bool = True
    fail_at_step: int | None = Field(None, description="testing: raise inside the loop once, on the last rank, at this step")
