"""One adapter per upstream dataset: where it lives on the hub and how a raw record maps to
the canonical row. Adding a source = one normalize function + one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import UserError
from .pairs import normalize_pairs
from .prompt_sets import normalize_alpaca_eval, normalize_cnn_dailymail
from .tldr import normalize_comparison, normalize_sft
from .ultrafeedback import normalize_binarized, normalize_cleaned

Normalizer = Callable[[dict[str, Any], "str | None"], dict[str, Any]]


@dataclass(frozen=True)
class Source:
    name: str
    normalize: Normalizer
    hub_id: str | None  # None: no upstream dataset (the pairs source reads what it is given)
    hub_config: str | None
    hub_split: str
    sample_file: str | None  # shipped sample in drdo_ray/data/samples/ (None: none)
    kind: str  # "pairs" (preference pairs) | "sft" (one response) | "prompts" (eval prompts)
    # Script datasets on the hub load through their automatic parquet conversion.
    hub_revision: str | None = None
    # Large datasets stream from the hub instead of downloading whole.
    streaming: bool = False


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "ultrafeedback",
            normalize_binarized,
            "HuggingFaceH4/ultrafeedback_binarized",
            None,
            "train_prefs",
            "ultrafeedback_binarized.jsonl",
            "pairs",
        ),
        Source(
            "ultrafeedback_cleaned",
            normalize_cleaned,
            "argilla/ultrafeedback-binarized-preferences-cleaned",
            None,
            "train",
            "ultrafeedback_cleaned.jsonl",
            "pairs",
        ),
        Source(
            "tldr",
            normalize_comparison,
            "openai/summarize_from_feedback",
            "comparisons",
            "train",
            "tldr_comparisons.jsonl",
            "pairs",
            hub_revision="refs/convert/parquet",
        ),
        Source(
            "tldr_sft",
            normalize_sft,
            "vwxyzjn/summarize_from_feedback_tldr_3_filtered",
            None,
            "train",
            "tldr_sft.jsonl",
            "sft",
        ),
        Source(
            "cnn_dailymail",
            normalize_cnn_dailymail,
            "abisee/cnn_dailymail",
            "3.0.0",
            "test",
            "cnn_dailymail.jsonl",
            "prompts",
            streaming=True,
        ),
        Source(
            "alpaca_eval",
            normalize_alpaca_eval,
            "tatsu-lab/alpaca_eval",
            "alpaca_eval",
            "eval",
            "alpaca_eval.json",
            "prompts",
            hub_revision="refs/convert/parquet",
        ),
        Source("pairs", normalize_pairs, None, None, "train", None, "pairs"),
    ]
}


def sample_path(source: Source) -> Path:
    """The shipped sample file of a source (importable without Ray, e.g. by benchmarks)."""
    if source.sample_file is None:
        raise UserError(f"the {source.name} source ships no sample: give a file or folder as its input")
    return Path(str(resources.files("drdo_ray.data") / "samples" / source.sample_file))
