"""Evaluation prompt sets: CNN/DailyMail (abisee/cnn_dailymail 3.0.0) and AlpacaEval
(tatsu-lab/alpaca_eval). The reference response goes in ``chosen``."""

from __future__ import annotations

import hashlib
from typing import Any

from ..schema import RejectRow, pair_row, require, require_text
from .tldr import format_article


def _reference(record: dict[str, Any], key: str) -> str | None:
    """An evaluation prompt stays usable without its reference: a blank one becomes None
    (the real AlpacaEval file has two empty reference outputs)."""
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise RejectRow("wrong_type", f"{key} is {type(value).__name__}")
    return value if value and value.strip() else None


def normalize_cnn_dailymail(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    article = require_text(record, "article", reason="empty_prompt")
    highlights = _reference(record, "highlights")
    row_id = record.get("id") or hashlib.sha1(article.encode()).hexdigest()
    return pair_row(
        id=f"cnndm-{row_id}",
        source="cnn_dailymail",
        prompt=format_article(article),
        chosen=highlights,
        rejected=None,
        split=split,
        chat=False,
    )


def normalize_alpaca_eval(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    instruction = require_text(record, "instruction", reason="empty_prompt")
    output = _reference(record, "output")
    require(record, "dataset", str)
    # AlpacaEval has no ids; the instruction text is the identity (all 805 are distinct).
    digest = hashlib.sha1(instruction.encode("utf-8")).hexdigest()[:16]
    return pair_row(
        id=f"alpaca-{digest}",
        source="alpaca_eval",
        prompt=instruction,
        chosen=output,
        rejected=None,
        split=split,
        chat=True,
    )
