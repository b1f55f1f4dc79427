"""Ultrafeedback, binarized (HuggingFaceH4/ultrafeedback_binarized) and cleaned
(argilla/ultrafeedback-binarized-preferences-cleaned). Chosen/rejected are message lists;
the prompt is the user turn, the response the last assistant turn."""

from __future__ import annotations

import hashlib
from typing import Any

from ..schema import RejectRow, content_id, optional_number, pair_row, require, require_text


def _assistant_text(record: dict[str, Any], key: str) -> str:
    messages = require(record, key, list)
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise RejectRow("wrong_type", f"{key} holds a {type(message).__name__}, not a message")
        if message.get("role") == "assistant":
            content = message.get("content")
            if not isinstance(content, str):
                raise RejectRow("wrong_type", f"{key} assistant content is {type(content).__name__}")
            return content
    raise RejectRow("missing_field", f"{key} has no assistant turn")


def _prompt_id(record: dict[str, Any], prompt: str) -> str:
    given = record.get("prompt_id")
    if isinstance(given, str) and given:
        return given
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def normalize_binarized(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    prompt = require_text(record, "prompt", reason="empty_prompt")
    chosen = _assistant_text(record, "chosen")
    rejected = _assistant_text(record, "rejected")
    score_chosen = optional_number(record, "score_chosen")
    score_rejected = optional_number(record, "score_rejected")
    # A prompt can appear in several pairs; the responses make the id unique and stable.
    digest = hashlib.sha1(f"{chosen}\x00{rejected}".encode()).hexdigest()[:10]
    return pair_row(
        id=f"uf-{_prompt_id(record, prompt)[:16]}-{digest}",
        source="ultrafeedback",
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        score_chosen=score_chosen,
        score_rejected=score_rejected,
        split=split,
        chat=True,
    )


def normalize_cleaned(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    prompt = require_text(record, "prompt", reason="empty_prompt")
    chosen = _assistant_text(record, "chosen")
    rejected = _assistant_text(record, "rejected")
    return pair_row(
        id=content_id("ufc", prompt, chosen, rejected),
        source="ultrafeedback_cleaned",
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        score_chosen=optional_number(record, "chosen-rating"),
        score_rejected=optional_number(record, "rejected-rating"),
        split=split,
        chat=True,
    )
