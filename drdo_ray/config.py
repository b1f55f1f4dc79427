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
