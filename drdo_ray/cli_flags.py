"""Command-line flags declared by the stage configs: a command names the config fields it exposes,
and each flag's name, type, choices, default and help come from that field (config.py), so a
setting is declared once. cli.py (models, data, score, train, pipeline, demo) and the packages that
register their own commands (serve, generation, eval, bench) build their parsers with these helpers;
no command keeps its own list of flag names.

    add_config_flags(parser, TrainConfig, ["lr", "deepspeed.zero_stage"])   # --lr, --zero-stage
    cfg = config_from_args(TrainConfig, args, section="align")              # YAML < flags < --set
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import StageConfig, load_config
from .errors import UserError

C = TypeVar("C", bound=StageConfig)

FIELDS_KEY = "config_fields"  # the parser default listing the field paths its flags set
CLASS_KEY = "config_class"  # the parser default naming the config class its flags belong to
LISTS_KEY = "config_lists"  # {field path: (flag, item type)} of the comma-separated list flags
LIST_ITEM = "list_item"


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--set KEY=VALUE``: every command takes them."""
    parser.add_argument(
        "--config",
        help="YAML file with this stage's settings, or a shipped config by name (drdo-ray configs)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable; dotted keys for nested settings)",
    )


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type[BaseModel],
    fields: Sequence[str] | None = None,
    *,
    exclude: Collection[str] = (),
    custom: dict[str, dict[str, Any]] | None = None,
) -> None:
    """A ``--kebab-name`` flag for each field path of ``cls`` (``deepspeed.zero_stage`` is
    ``--zero-stage`` and sets that nested field); ``fields=None``: every field a flag can hold
    (not ``exclude``; dicts, tuples and nested configs stay with ``--config`` and ``--set``).
    ``custom[path]`` adds or replaces argparse keywords; ``flags`` there replaces the option strings."""
    if fields is None:
        fields = [name for name, info in cls.model_fields.items() if name not in exclude and flaggable(info)]
    lists = dict(parser.get_default(LISTS_KEY) or {})
    for path in fields:
        kwargs = _argparse_kwargs(path, _field(cls, path))
        kwargs.update((custom or {}).get(path, {}))
        options = kwargs.pop("flags", None) or ["--" + path.rsplit(".", 1)[-1].replace("_", "-")]
        if LIST_ITEM in kwargs:
            lists[path] = (options[0], kwargs.pop(LIST_ITEM))
        parser.add_argument(*options, dest=path, default=None, **kwargs)
    parser.set_defaults(
        **{FIELDS_KEY: [*(parser.get_default(FIELDS_KEY) or []), *fields], LISTS_KEY: lists, CLASS_KEY: cls}
    )


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """{field path: value} of the config flags given on the command line (lists split)."""
    values = {path: getattr(args, path) for path in getattr(args, FIELDS_KEY, [])}
    for path, (flag, item) in (getattr(args, LISTS_KEY, None) or {}).items():
        if isinstance(values.get(path), str):
            values[path] = _csv(flag, item, values[path])
    return values


def config_from_args(
    cls: type[C], args: argparse.Namespace, section: str, extra: dict[str, Any] | None = None
) -> C:
    """``cls`` from defaults < ``--config`` (its ``section``) < the flags (and ``extra``) < ``--set``."""
    return load_config(
        cls,
        config_file=args.config,
        section=section,
        flags=flag_values(args) | (extra or {}),
        overrides=args.overrides,
    )


def _field(cls: type[BaseModel], path: str) -> FieldInfo:
    *parents, leaf = path.split(".")
    model = cls
    for name in parents:
        model = _unwrap(model.model_fields[name].annotation)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{cls.__name__}.{path}: {name} is not a nested config")
    if leaf not in model.model_fields:
        raise TypeError(f"{cls.__name__} has no field {path}")
    return model.model_fields[leaf]


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X`` (the validators run in the config)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _csv(flag: str, item: Callable[[str], Any], text: str) -> list[Any]:
    """'a,b' -> [item(a), item(b)]; parsed here, not by argparse, so a bad list is one line."""
    try:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated {item.__name__} values, got {text!r}") from None
    if not values:
        raise UserError(f"{flag} is empty; give at least one value, e.g. {flag} A,B")
    return values


def flaggable(info: FieldInfo) -> bool:
    """Whether a flag can hold this field (a scalar, a choice, a list of scalars)."""
    try:
        _argparse_kwargs("", info)
    except TypeError:
        return False
    return True


def _argparse_kwargs(path: str, info: FieldInfo) -> dict[str, Any]:
    annotation = _unwrap(info.annotation)
    origin = typing.get_origin(annotation)
    name = path.rsplit(".", 1)[-1]
    kwargs: dict[str, Any] = {}
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        choices = list(typing.get_args(annotation))
        kwargs.update(choices=choices, type=type(choices[0]))
    elif annotation in (int, float, str):
        kwargs.update(type=annotation, metavar=name.upper())
    elif isinstance(annotation, type) and callable(getattr(annotation, "parse", None)):
        kwargs.update(type=str, metavar=name.upper())  # a value typed from its text (DistillTrunk)
    elif origin is list:
        (item,) = typing.get_args(annotation)
        scalar = type(typing.get_args(item)[0]) if typing.get_origin(item) is Literal else item
        if scalar not in (int, float, str):
            raise TypeError(f"no flag for {path}: list of {item}")
        kwargs.update(metavar="A,B,...")
        kwargs[LIST_ITEM] = scalar  # add_config_flags keeps it for flag_values
    else:
        raise TypeError(f"no flag for {path}: {info.annotation} (use --set)")
    kwargs["help"] = _help(info)
    return kwargs


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    default = info.get_default(call_default_factory=True)
    if default is not PydanticUndefined and default is not None and "default" not in text:
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text.replace("%", "%%")  # argparse formats help with %
