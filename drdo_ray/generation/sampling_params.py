"""One sampling-settings type for every backend, and the one rule for "the same temperature".

:class:`SamplingParams` is what the transformers engine takes as it is; it writes itself as the
keywords of ``vllm.SamplingParams`` (the vLLM engine, and Ray Data LLM's ``sampling_params``
column) and as the sampling fields of an OpenAI ``/v1/completions`` request (the http backend).
The server parses requests into it. No torch, vLLM or Ray here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .row_sampler import GREEDY_BELOW

TEMPERATURE_DECIMALS = 4


def temperature_id(t: float | None) -> float | None:
    """The sampling temperature as compared everywhere: rounded to 4 decimals, so 0.7 written as
    0.7000000001 by one writer is the 0.7 of another (None or NaN: no temperature). Two
    temperatures are the same exactly when their ids are equal."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return None
    return round(float(t), TEMPERATURE_DECIMALS)


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI sampling parameters. ``temperature == 0`` is greedy decoding. ``seed=None`` draws
    a fresh seed per call. ``stop`` strings end a completion and are not part of its text.
    ``ignore_eos`` (a vLLM extension) keeps generating past EOS: fixed-length load tests."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and self.greedy:
            raise ValueError(f"n must be 1 with temperature 0 (greedy decoding has one answer), got {self.n}")
        if isinstance(self.stop, str):  # a lone string is one stop sequence, not its characters
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is not None:
            object.__setattr__(self, "stop", tuple(s for s in self.stop if s) or None)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def _extensions(self) -> dict[str, Any]:
        """stop and ignore_eos, only where set (vLLM's and the server's defaults otherwise)."""
        return ({"stop": list(self.stop)} if self.stop else {}) | (
            {"ignore_eos": True} if self.ignore_eos else {}
        )

    def vllm_kwargs(self) -> dict[str, Any]:
        """The keywords of ``vllm.SamplingParams``: the vLLM engine's, and the ``sampling_params``
        of a Ray Data LLM row."""
        return {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            **self._extensions(),
        }

    def openai_payload(self) -> dict[str, Any]:
        """The sampling fields of an OpenAI ``/v1/completions`` request (``ignore_eos``, where
        set, is the vLLM extension that vLLM and `drdo-ray serve` accept)."""
        seed = {"seed": self.seed} if self.seed is not None else {}
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "n": self.n,
            **seed,
            **self._extensions(),
        }
