"""Reddit TL;DR: human comparisons (openai/summarize_from_feedback, config ``comparisons``)
and the SFT set of human summaries (vwxyzjn/summarize_from_feedback_tldr_3_filtered, or the
CarperAI ``prompt``/``label`` layout)."""

from __future__ import annotations

import hashlib
from typing import Any

from ..schema import RejectRow, pair_row, require, require_text

# Comparison batches drawn from CNN/DM articles: excluded from training (docs/concepts.md, TL;DR splits).
CNNDM_BATCHES = frozenset({"batch0_cnndm", "cnndm0", "cnndm2"})


def format_post(subreddit: str, title: str, post: str) -> str:
    """The paper's TL;DR prompt."""
    return f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"


def format_article(article: str) -> str:
    """CNN/DM as an out-of-distribution TL;DR prompt: the same layout without subreddit and
    title, so a Reddit-trained policy sees the cue it was trained on."""
    return f"POST: {article}\n\nTL;DR:"


def _summary_text(summaries: list[Any], index: int) -> str:
    item = summaries[index]
    if not isinstance(item, dict):
        raise RejectRow("wrong_type", f"summaries[{index}] is {type(item).__name__}")
    text = item.get("text")
    if text is None:
        raise RejectRow("missing_field", f"summaries[{index}].text")
    if not isinstance(text, str):
        raise RejectRow("wrong_type", f"summaries[{index}].text is {type(text).__name__}")
    return text


def _confidence(record: dict[str, Any]) -> float | None:
    extra = record.get("extra")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise RejectRow("wrong_type", f"extra is {type(extra).__name__}")
    value = extra.get("confidence")
    if value is None:
        return None  # upstream has nulls: such rows count in `full` but not easy/hard
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise RejectRow("invalid_confidence", repr(value))
    if not 1 <= value <= 9:
        raise RejectRow("invalid_confidence", repr(value))
    return float(value)


def normalize_comparison(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    batch = record.get("batch")
    if isinstance(batch, str) and batch in CNNDM_BATCHES:
        raise RejectRow("excluded_cnndm_batch", batch)
    info = require(record, "info", dict)
    post = require_text(info, "post", reason="empty_prompt")
    title = require(info, "title", str)
    subreddit = require(info, "subreddit", str)
    summaries = require(record, "summaries", list)
    if len(summaries) != 2:
        raise RejectRow("wrong_type", f"summaries has {len(summaries)} items, expected 2")
    choice = require(record, "choice", int)
    if choice not in (0, 1):
        raise RejectRow("invalid_choice", repr(choice))
    texts = [_summary_text(summaries, 0), _summary_text(summaries, 1)]
    chosen, rejected = texts[choice], texts[1 - choice]
    post_id = str(info.get("id") or hashlib.sha1(post.encode()).hexdigest()[:12])
    # Several comparisons share a post; the pair of texts makes the id unique and stable.
    digest = hashlib.sha1(f"{chosen}\x00{rejected}".encode()).hexdigest()[:10]
    row_split = record.get("split") if isinstance(record.get("split"), str) else split
    return pair_row(
        id=f"tldr-{post_id}-{digest}",
        source="tldr",
        prompt=format_post(subreddit, title, post),
        chosen=chosen,
        rejected=rejected,
        confidence=_confidence(record),
        split=row_split,
        chat=False,
    )


def normalize_sft(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    if "post" in record:
        post = require_text(record, "post", reason="empty_prompt")
        prompt = format_post(require(record, "subreddit", str), require(record, "title", str), post)
        summary = require_text(record, "summary")
    else:  # CarperAI/openai_summarize_tldr: prompt already formatted, summary in `label`
        prompt = require_text(record, "prompt", reason="empty_prompt")
        summary = require_text(record, "label")
    row_id = record.get("id") or hashlib.sha1(prompt.encode()).hexdigest()[:12]
    return pair_row(
        id=f"tldr-sft-{row_id}",
        source="tldr_sft",
        prompt=prompt,
        chosen=summary,
        rejected=None,
        split=split,
        chat=False,
    )
