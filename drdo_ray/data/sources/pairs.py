"""Canonical preference pairs as they are: rows that already carry ``prompt``, ``chosen`` and
``rejected`` texts (``chat``, ``score_chosen``, ``score_rejected``, ``split`` and ``id``
optional). Your own pairs in JSON Lines or parquet, and the pairs each online round builds from
its samples (drdo_ray/online/pairs.py), are prepared through this source."""

from __future__ import annotations

from typing import Any

from ..schema import RejectRow, content_id, optional_number, pair_row, require_text


def normalize_pairs(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    prompt = require_text(record, "prompt", reason="empty_prompt")
    chosen = require_text(record, "chosen")
    rejected = require_text(record, "rejected")
    chat = record.get("chat", False)
    if not isinstance(chat, bool):
        raise RejectRow("wrong_type", f"chat is {type(chat).__name__}")
    given = record.get("id")
    if given is not None and not isinstance(given, str):
        raise RejectRow("wrong_type", f"id is {type(given).__name__}")
    row_split = record.get("split") if isinstance(record.get("split"), str) else split
    return pair_row(
        id=given or content_id("pairs", prompt, chosen, rejected),
        source="pairs",
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        score_chosen=optional_number(record, "score_chosen"),
        score_rejected=optional_number(record, "score_rejected"),
        split=row_split,
        chat=chat,
    )
