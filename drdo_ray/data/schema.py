"""The canonical row every source is mapped to, and the reject reasons.

Pure Python + pyarrow: no Ray here, so adapters are testable in milliseconds.

Canonical pair row (docs/configs.md, "The run directory"): ``id, source, prompt, chosen, rejected, score_chosen,
score_rejected, confidence, split``. Prompt sets (CNN/DM, AlpacaEval) and SFT sets use the
same row with the reference response in ``chosen`` and ``rejected`` null. Extra columns:

- ``chat``: the prompt is a user turn to be wrapped in the tokenizer's chat template.
- ``equal_scores``: Ultrafeedback pairs whose two ratings tie (~17% upstream); kept, flagged.
- ``distance`` / ``difficulty``: TL;DR normalized token edit distance between the two
  summaries and the easy/hard label (``tldr_split.py``).
- ``split``: the upstream split the row came from (train, test_prefs, valid1, ...).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa


class RejectRow(ValueError):
    """A row that cannot be used; ``reason`` is a stable code counted in stats.json."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = known_reason(reason)
        self.detail = detail


# Stable reason codes (stats.json counts rows by these).
REASONS = {
    "invalid_utf8": "the line is not valid UTF-8",
    "invalid_json": "the line is not a complete JSON value (truncated or malformed)",
    "not_an_object": "the JSON value is not an object",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type",
    "empty_prompt": "the prompt is empty",
    "empty_response": "a response is empty",
    "identical_responses": "chosen and rejected are the same text",
    "invalid_choice": "TL;DR choice is not 0 or 1",
    "invalid_confidence": "TL;DR confidence is not an integer in 1..9",
    "excluded_cnndm_batch": "TL;DR CNN/DM batch, excluded from training (docs/concepts.md)",
    "prompt_too_long": "the prompt has more tokens than max_prompt_length",
    "too_long": "prompt + response has more tokens than max_length",
}


def known_reason(reason: str) -> str:
    """``reason`` itself, once checked to be one of REASONS: a new reject path must add its code
    there (with what it means), or stats.json would count rows under a code nobody documented."""
    if reason not in REASONS:
        raise KeyError(f"unknown reject reason {reason!r}: add it to drdo_ray.data.schema.REASONS")
    return reason


# Arrow schema of normalized rows (before tokenization). A fixed schema keeps blocks from
# different files unifiable even when a source field is null in one file and set in another.
NORMALIZED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("score_chosen", pa.float64()),
        ("score_rejected", pa.float64()),
        ("confidence", pa.float64()),
        ("split", pa.string()),
        ("chat", pa.bool_()),
        ("equal_scores", pa.bool_()),
        ("reject_reason", pa.string()),
        ("reject_detail", pa.string()),
        ("origin", pa.string()),
        ("raw", pa.string()),
    ]
)

TOKEN_FIELDS = [
    ("prompt_ids", pa.list_(pa.int32())),
    ("chosen_ids", pa.list_(pa.int32())),
    ("rejected_ids", pa.list_(pa.int32())),
    ("prompt_len", pa.int32()),
    ("chosen_len", pa.int32()),
    ("rejected_len", pa.int32()),
    ("distance", pa.float64()),
]

# Columns used only on the way (reject bookkeeping); dropped from the written dataset.
INTERNAL_COLUMNS = ("reject_reason", "reject_detail", "origin", "raw")

RAW_PREVIEW_CHARS = 2000


def require(record: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``record[key]`` checked for presence and type, else a RejectRow naming the field."""
    if key not in record or record[key] is None:
        raise RejectRow("missing_field", key)
    value = record[key]
    # bool is an int subclass; a boolean where a number is expected is a typing error.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RejectRow("wrong_type", f"{key} is bool")
    if not isinstance(value, kind):
        raise RejectRow("wrong_type", f"{key} is {type(value).__name__}")
    return value


def require_text(record: dict[str, Any], key: str, *, reason: str = "empty_response") -> str:
    """A non-blank string field; blank text is rejected with ``reason``."""
    value = require(record, key, str)
    if not value.strip():
        raise RejectRow(reason, key)
    return value


def optional_number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RejectRow("wrong_type", f"{key} is {type(value).__name__}")
    return float(value)


def content_id(prefix: str, prompt: str, chosen: str, rejected: str) -> str:
    """A row id for a source without ids of its own: the same pair always gets the same id."""
    return f"{prefix}-" + hashlib.sha1(f"{prompt}\x00{chosen}\x00{rejected}".encode()).hexdigest()[:16]


def pair_row(
    *,
    id: str,
    source: str,
    prompt: str,
    chosen: str | None,
    rejected: str | None,
    split: str | None,
    chat: bool,
    score_chosen: float | None = None,
    score_rejected: float | None = None,
    confidence: float | None = None,
) -> dict[str, Any]:
    """Build a canonical row, enforcing the rules every source shares. ``chosen`` may be None only
    in a prompt set whose reference response is missing (the prompt is still usable)."""
    if not prompt.strip():
        raise RejectRow("empty_prompt")
    if chosen is None and rejected is not None:
        raise RejectRow("missing_field", "chosen")
    if (chosen is not None and not chosen.strip()) or (rejected is not None and not rejected.strip()):
        raise RejectRow("empty_response")
    if rejected is not None and chosen is not None and chosen.strip() == rejected.strip():
        raise RejectRow("identical_responses")
    equal = score_chosen is not None and score_rejected is not None and score_chosen == score_rejected
    return {
        "id": id,
        "source": source,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
        "confidence": confidence,
        "split": split,
        "chat": chat,
        "equal_scores": equal,
    }
