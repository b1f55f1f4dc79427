"""Adapters map each upstream layout to the canonical row (hand-written expected rows), and
every kind of bad record becomes a reject with a stable reason."""

from __future__ import annotations

import hashlib

import pytest

from drdo_ray.data.normalize import decode_line, normalize_one
from drdo_ray.data.schema import RejectRow
from drdo_ray.data.sources import SOURCES


def _msgs(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"content": user, "role": "user"}, {"content": assistant, "role": "assistant"}]


def _digest(*parts: str, n: int = 10) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:n]


UF_RECORD = {
    "prompt": "How do I boil an egg?",
    "prompt_id": "ab" * 32,
    "chosen": _msgs("How do I boil an egg?", "Simmer it for nine minutes."),
    "rejected": _msgs("How do I boil an egg?", "Eggs eggs eggs."),
    "messages": _msgs("How do I boil an egg?", "Simmer it for nine minutes."),
    "score_chosen": 8.5,
    "score_rejected": 8.5,
}

TLDR_RECORD = {
    "info": {
        "id": "t3_abc",
        "post": "My cat hates baths.",
        "title": "Cat help",
        "subreddit": "pets",
        "site": None,
        "article": None,
    },
    "summaries": [
        {"text": " cat refuses baths", "policy": "sup2", "note": None},
        {"text": " I have a cat", "policy": "ref", "note": "meh"},
    ],
    "choice": 1,
    "worker": "w1",
    "batch": "batch3",
    "split": "valid1",
    "extra": {"confidence": 7},
}


def test_ultrafeedback_binarized_row():
    row = SOURCES["ultrafeedback"].normalize(UF_RECORD, "train_prefs")
    assert row == {
        "id": f"uf-{'ab' * 8}-{_digest('Simmer it for nine minutes.', 'Eggs eggs eggs.')}",
        "source": "ultrafeedback",
        "prompt": "How do I boil an egg?",
        "chosen": "Simmer it for nine minutes.",
        "rejected": "Eggs eggs eggs.",
        "score_chosen": 8.5,
        "score_rejected": 8.5,
        "confidence": None,
        "split": "train_prefs",
        "chat": True,
        "equal_scores": True,
    }


def test_ultrafeedback_cleaned_row():
    record = {
        "source": "evol_instruct",
        "prompt": "Name a prime.",
        "chosen": _msgs("Name a prime.", "7"),
        "chosen-rating": 5.0,
        "chosen-model": "gpt-4",
        "rejected": _msgs("Name a prime.", "8"),
        "rejected-rating": 1.0,
        "rejected-model": "llama",
    }
    row = SOURCES["ultrafeedback_cleaned"].normalize(record, "train")
    assert row["id"] == f"ufc-{_digest('Name a prime.', '7', '8', n=16)}"
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Name a prime.", "7", "8")
    assert (row["score_chosen"], row["score_rejected"], row["equal_scores"]) == (5.0, 1.0, False)
    assert row["source"] == "ultrafeedback_cleaned" and row["chat"] is True


def test_tldr_comparison_row_follows_choice_and_prompt_format():
    row = SOURCES["tldr"].normalize(TLDR_RECORD, None)
    assert row == {
        "id": f"tldr-t3_abc-{_digest(' I have a cat', ' cat refuses baths')}",
        "source": "tldr",
        "prompt": "SUBREDDIT: r/pets\n\nTITLE: Cat help\n\nPOST: My cat hates baths.\n\nTL;DR:",
        "chosen": " I have a cat",
        "rejected": " cat refuses baths",
        "score_chosen": None,
        "score_rejected": None,
        "confidence": 7.0,
        "split": "valid1",
        "chat": False,
        "equal_scores": False,
    }


def test_tldr_null_confidence_is_kept():
    record = {**TLDR_RECORD, "extra": {"confidence": None}}
    assert SOURCES["tldr"].normalize(record, None)["confidence"] is None


def test_tldr_sft_both_layouts():
    row = SOURCES["tldr_sft"].normalize(
        {"id": "x1", "subreddit": "cooking", "title": "Soup", "post": "Too salty.", "summary": " add water"},
        "train",
    )
    assert row["prompt"] == "SUBREDDIT: r/cooking\n\nTITLE: Soup\n\nPOST: Too salty.\n\nTL;DR:"
    assert (row["id"], row["chosen"], row["rejected"]) == ("tldr-sft-x1", " add water", None)
    carper = SOURCES["tldr_sft"].normalize({"prompt": "POST: hi\n\nTL;DR:", "label": " greet"}, "train")
    assert (carper["prompt"], carper["chosen"]) == ("POST: hi\n\nTL;DR:", " greet")


def test_prompt_sets():
    cnn = SOURCES["cnn_dailymail"].normalize(
        {"article": "Rain fell.", "highlights": "Wet day.", "id": "f" * 40}, "test"
    )
    assert (cnn["id"], cnn["prompt"], cnn["chosen"], cnn["rejected"]) == (
        f"cnndm-{'f' * 40}",
        "POST: Rain fell.\n\nTL;DR:",
        "Wet day.",
        None,
    )
    alpaca = SOURCES["alpaca_eval"].normalize(
        {
            "dataset": "helpful_base",
            "instruction": "Say hi",
            "output": "Hi!",
            "generator": "text_davinci_003",
        },
        "eval",
    )
    assert alpaca["id"] == f"alpaca-{hashlib.sha1(b'Say hi').hexdigest()[:16]}"
    assert (alpaca["prompt"], alpaca["chosen"], alpaca["chat"]) == ("Say hi", "Hi!", True)
    # A prompt whose reference is empty is still a prompt (two such rows in the real file).
    empty = SOURCES["alpaca_eval"].normalize({"dataset": "koala", "instruction": "Hi", "output": ""}, "eval")
    assert (empty["prompt"], empty["chosen"]) == ("Hi", None)


@pytest.mark.parametrize(
    ("source", "record", "reason"),
    [
        ("ultrafeedback", {**UF_RECORD, "prompt": None}, "missing_field"),
        ("ultrafeedback", {**UF_RECORD, "prompt": 42}, "wrong_type"),
        ("ultrafeedback", {**UF_RECORD, "chosen": _msgs("q", "  ")}, "empty_response"),
        ("ultrafeedback", {**UF_RECORD, "rejected": UF_RECORD["chosen"]}, "identical_responses"),
        ("ultrafeedback", {**UF_RECORD, "chosen": [{"role": "user", "content": "q"}]}, "missing_field"),
        ("ultrafeedback", {**UF_RECORD, "score_chosen": "high"}, "wrong_type"),
        ("tldr", {**TLDR_RECORD, "choice": 2}, "invalid_choice"),
        ("tldr", {**TLDR_RECORD, "choice": "1"}, "wrong_type"),
        ("tldr", {**TLDR_RECORD, "choice": True}, "wrong_type"),
        ("tldr", {**TLDR_RECORD, "extra": {"confidence": 12}}, "invalid_confidence"),
        ("tldr", {**TLDR_RECORD, "batch": "batch0_cnndm"}, "excluded_cnndm_batch"),
        ("tldr", {**TLDR_RECORD, "summaries": TLDR_RECORD["summaries"][:1]}, "wrong_type"),
        ("tldr", {**TLDR_RECORD, "info": {**TLDR_RECORD["info"], "post": ""}}, "empty_prompt"),
        ("alpaca_eval", {"dataset": "d", "output": "y", "generator": "g"}, "missing_field"),
        ("alpaca_eval", {"dataset": "d", "instruction": "x", "output": 3, "generator": "g"}, "wrong_type"),
    ],
)
def test_bad_records_are_rejected_with_reason(source, record, reason):
    with pytest.raises(RejectRow) as caught:
        SOURCES[source].normalize(record, None)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"prompt": "caf\xe9"}', "invalid_utf8"),
        (b'{"prompt": "trunc', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
    ],
)
def test_bad_lines_are_rejected(raw, reason):
    with pytest.raises(RejectRow) as caught:
        decode_line(raw)
    assert caught.value.reason == reason
    row = normalize_one(SOURCES["ultrafeedback"], raw, "f.jsonl:3", None)
    assert (row["reject_reason"], row["origin"], row["id"]) == (reason, "f.jsonl:3", None)
    assert row["raw"]  # a preview of what was rejected, for the person reading rejects.jsonl


def test_every_reject_reason_is_a_documented_code():
    # stats.json counts rows by reason: a code missing from REASONS is refused where it is raised.
    from drdo_ray.data.schema import REASONS, known_reason

    with pytest.raises(KeyError, match="unknown reject reason 'no_such_reason'"):
        RejectRow("no_such_reason")
    assert known_reason("too_long") == "too_long" and all(REASONS.values())
