"""The attention kernel a stage loads its models with (``attn_implementation``): whether the choice
can run where the stage runs, decided on the driver before any worker or actor starts, and the
``from_pretrained`` keyword that asks transformers for it. No torch here."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from .config import AttentionSettings
from .errors import UserError

logger = logging.getLogger(__name__)


def unavailable(choice: str, *, gpu: bool) -> str | None:
    """Why ``choice`` cannot run on the stage's devices (``gpu``: it runs on CUDA GPUs), or None.
    sdpa and eager run everywhere; flash_attention_2 needs a CUDA GPU and the flash-attn package
    (checked here, on the driver: the cluster's workers share its environment)."""
    if choice != "flash_attention_2":
        return None
    if not gpu:
        return "flash_attention_2 needs a CUDA GPU and this stage runs on CPU"
    if importlib.util.find_spec("flash_attn") is None:
        return "flash_attention_2 needs the flash-attn package (pip install flash-attn), not installed"
    return None


def resolve_attention(settings: AttentionSettings, *, gpu: bool, stage: str) -> str:
    """The implementation ``stage`` loads its models with: the one asked for, or with
    ``attn_fallback: sdpa`` sdpa (logged) where it cannot run; else a one-line error."""
    choice = settings.attn_implementation
    problem = unavailable(choice, gpu=gpu)
    if problem is None:
        return choice
    if settings.attn_fallback == "sdpa":
        logger.warning("%s: %s; using sdpa (attn_fallback: sdpa)", stage, problem)
        return "sdpa"
    raise UserError(
        f"{stage}: attn_implementation {choice}: {problem}; choose sdpa or eager, "
        "or set attn_fallback=sdpa to fall back"
    )


def attn_kwargs(implementation: str) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for an implementation :func:`resolve_attention` returned.
    sdpa is transformers' own default, which also picks eager for an architecture without sdpa."""
    return {} if implementation == "sdpa" else {"attn_implementation": implementation}
