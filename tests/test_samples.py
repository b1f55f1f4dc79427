"""The shipped sample datasets: produced by scripts/make_samples.py, upstream schemas, hidden rule."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_samples.py"
SAMPLES = ROOT / "drdo_ray" / "data" / "samples"
REAL_ALPACA = ROOT.parent / "shared" / "data" / "real" / "alpaca_eval_805.json"

FILES = [
    "ultrafeedback_binarized.jsonl",
    "ultrafeedback_cleaned.jsonl",
    "tldr_comparisons.jsonl",
    "tldr_sft.jsonl",
    "cnn_dailymail.jsonl",
    "alpaca_eval.json",
]
MAX_BYTES = int(1.2 * 2**20)
CNNDM_BATCHES = {"batch0_cnndm", "cnndm0", "cnndm2"}
HEX = re.compile(r"[0-9a-f]+")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_samples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE_SAMPLES = _load_script()
TOPIC_NOUNS = frozenset(noun.lower() for voc in MAKE_SAMPLES.TOPICS.values() for noun in voc["nouns"])
assert all(" " not in noun for noun in TOPIC_NOUNS)


def read_jsonl(name: str) -> list[dict]:
    with open(SAMPLES / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run_script(out: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args], check=True, cwd=ROOT, capture_output=True
    )


# --------------------------------------------------------------------------------------------------
# Provenance and determinism
# --------------------------------------------------------------------------------------------------


def test_generator_is_deterministic_and_produced_the_shipped_files(tmp_path):
    run_script(tmp_path / "a")
    run_script(tmp_path / "b", "--seed", "0")
    for name in FILES:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes(), f"{name}: two runs differ"
        assert (SAMPLES / name).exists(), f"{name} is not shipped; run `make samples`"
        assert a == (SAMPLES / name).read_bytes(), f"{name}: shipped file is stale; run `make samples`"


def test_seed_changes_the_output(tmp_path):
    MAKE_SAMPLES.generate(tmp_path, seed=1)
    assert (tmp_path / FILES[0]).read_bytes() != (SAMPLES / FILES[0]).read_bytes()


@pytest.mark.parametrize("name", FILES)
def test_file_encoding_and_size(name):
    raw = (SAMPLES / name).read_bytes()
    assert len(raw) < MAX_BYTES
    text = raw.decode("utf-8")
    assert "\r" not in text
    assert text.endswith("\n")
    if name.endswith(".jsonl"):
        assert all(line for line in text[:-1].split("\n")), "blank line"


def test_some_non_ascii_text():
    texts = [(SAMPLES / name).read_text(encoding="utf-8") for name in FILES]
    assert sum(any(ord(c) > 127 for c in t) for t in texts) >= 3
    assert any("—" in t for t in texts)


# --------------------------------------------------------------------------------------------------
# Schemas (exact key order and types, per row)
# --------------------------------------------------------------------------------------------------


def check_messages(msgs, prompt: str) -> None:
    assert isinstance(msgs, list) and len(msgs) == 2
    for msg, role in zip(msgs, ["user", "assistant"]):
        assert list(msg) == ["content", "role"]
        assert msg["role"] == role
        assert isinstance(msg["content"], str) and msg["content"].strip()
    assert msgs[0]["content"] == prompt


def test_ultrafeedback_binarized_schema():
    rows = read_jsonl("ultrafeedback_binarized.jsonl")
    assert 500 <= len(rows) <= 700
    for row in rows:
        assert list(row) == [
            "prompt",
            "prompt_id",
            "chosen",
            "rejected",
            "messages",
            "score_chosen",
            "score_rejected",
        ]
        assert isinstance(row["prompt"], str) and row["prompt"]
        assert len(row["prompt_id"]) == 64 and HEX.fullmatch(row["prompt_id"])
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()
        check_messages(row["chosen"], row["prompt"])
        check_messages(row["rejected"], row["prompt"])
        assert row["messages"] == row["chosen"]
        for key in ("score_chosen", "score_rejected"):
            assert type(row[key]) is float and 1.0 <= row[key] <= 10.0 and (row[key] * 2).is_integer()
        assert row["score_chosen"] >= row["score_rejected"]
    assert len({r["prompt_id"] for r in rows}) == len(rows)
    equal = sum(r["score_chosen"] == r["score_rejected"] for r in rows) / len(rows)
    assert 0.10 <= equal <= 0.25


def test_ultrafeedback_cleaned_schema():
    rows = read_jsonl("ultrafeedback_cleaned.jsonl")
    assert 250 <= len(rows) <= 350
    for row in rows:
        assert list(row) == [
            "source",
            "prompt",
            "chosen",
            "chosen-rating",
            "chosen-model",
            "rejected",
            "rejected-rating",
            "rejected-model",
        ]
        for key in ("source", "prompt", "chosen-model", "rejected-model"):
            assert isinstance(row[key], str) and row[key]
        check_messages(row["chosen"], row["prompt"])
        check_messages(row["rejected"], row["prompt"])
        for key in ("chosen-rating", "rejected-rating"):
            assert type(row[key]) is float and 1.0 <= row[key] <= 5.0
        assert row["chosen-rating"] > row["rejected-rating"]  # ties removed upstream


def is_cnndm(row: dict) -> bool:
    return row["batch"] in CNNDM_BATCHES


def test_tldr_comparisons_schema():
    rows = read_jsonl("tldr_comparisons.jsonl")
    assert 1200 <= len(rows) <= 1700
    for row in rows:
        assert list(row) == ["info", "summaries", "choice", "worker", "batch", "split", "extra"]
        info = row["info"]
        assert list(info) == ["id", "post", "title", "subreddit", "site", "article"]
        assert isinstance(info["id"], str) and info["id"]
        for key in ("post", "title", "subreddit", "site", "article"):
            assert info[key] is None or (isinstance(info[key], str) and info[key])
        if is_cnndm(row):
            assert isinstance(info["article"], str) and info["site"] in ("cnn", "dailymail")
            assert info["post"] is None and info["subreddit"] is None
        else:
            assert info["id"].startswith("t3_")
            assert all(isinstance(info[k], str) for k in ("post", "title", "subreddit"))
            assert info["site"] is None and info["article"] is None
            assert not info["subreddit"].startswith("r/")
            assert 60 <= len(info["post"].split()) <= 250
        assert isinstance(row["summaries"], list) and len(row["summaries"]) == 2
        for summary in row["summaries"]:
            assert list(summary) == ["text", "policy", "note"]
            assert isinstance(summary["text"], str) and summary["text"].startswith(" ")
            assert summary["text"].strip()
            assert isinstance(summary["policy"], str) and summary["policy"]
            assert summary["note"] is None or isinstance(summary["note"], str)
        assert row["summaries"][0]["text"] != row["summaries"][1]["text"]
        assert type(row["choice"]) is int and row["choice"] in (0, 1)
        assert isinstance(row["worker"], str) and row["worker"]
        assert isinstance(row["batch"], str) and row["batch"]
        assert row["split"] in ("train", "valid1", "valid2")
        assert list(row["extra"]) == ["confidence"]
        conf = row["extra"]["confidence"]
        assert conf is None or (type(conf) is int and 1 <= conf <= 9)


def test_tldr_comparisons_composition():
    rows = read_jsonl("tldr_comparisons.jsonl")
    n = len(rows)
    null = sum(r["extra"]["confidence"] is None for r in rows) / n
    assert 0.05 <= null <= 0.15
    cnndm = [r for r in rows if is_cnndm(r)]
    assert 80 <= len(cnndm) <= 150
    assert {r["batch"] for r in cnndm} == CNNDM_BATCHES
    assert {r["info"]["site"] for r in cnndm} == {"cnn", "dailymail"}
    assert any(re.fullmatch(r"batch\d+", r["batch"]) for r in rows)
    train = sum(r["split"] == "train" for r in rows) / n
    assert 0.80 <= train <= 0.90
    assert {r["split"] for r in rows} == {"train", "valid1", "valid2"}
    # Several comparisons per post, with different summary pairs.
    ids = [r["info"]["id"] for r in rows]
    assert len(set(ids)) <= n / 3
    pairs_by_id: dict[str, set] = {}
    for r in rows:
        pairs_by_id.setdefault(r["info"]["id"], set()).add(tuple(s["text"] for s in r["summaries"]))
    assert statistics.mean(len(p) for p in pairs_by_id.values()) > 2
    # A post's info is identical in all its rows.
    info_by_id = {}
    for r in rows:
        assert info_by_id.setdefault(r["info"]["id"], r["info"]) == r["info"]


def token_edit_distance(a: str, b: str) -> float:
    """Levenshtein distance over whitespace tokens / the longer length."""
    x, y = a.split(), b.split()
    prev = list(range(len(y) + 1))
    for i, tx in enumerate(x, 1):
        cur = [i]
        for j, ty in enumerate(y, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (tx != ty)))
        prev = cur
    return prev[-1] / max(len(x), len(y), 1)


def test_tldr_confidence_and_edit_distance_vary_together():
    rows = [r for r in read_jsonl("tldr_comparisons.jsonl") if r["extra"]["confidence"] is not None]
    confs = [r["extra"]["confidence"] for r in rows]
    dists = [token_edit_distance(r["summaries"][0]["text"], r["summaries"][1]["text"]) for r in rows]
    assert 4.0 <= statistics.mean(confs) <= 6.0
    assert set(confs) == set(range(1, 10))
    assert min(dists) <= 0.1 and max(dists) >= 0.8
    assert sum(d <= 0.15 for d in dists) >= 0.1 * len(rows)  # near-identical pairs
    assert sum(d >= 0.6 for d in dists) >= 0.1 * len(rows)  # very different pairs
    low = [d for c, d in zip(confs, dists) if c <= 3]
    high = [d for c, d in zip(confs, dists) if c >= 7]
    assert statistics.mean(high) > statistics.mean(low) + 0.3
    # Easy (both >= median) and hard (both < median) splits are both populated.
    mc, md = statistics.median(confs), statistics.median(dists)
    easy = sum(c >= mc and d >= md for c, d in zip(confs, dists))
    hard = sum(c < mc and d < md for c, d in zip(confs, dists))
    assert easy >= 0.25 * len(rows) and hard >= 0.25 * len(rows)


def test_tldr_sft_schema():
    rows = read_jsonl("tldr_sft.jsonl")
    assert 350 <= len(rows) <= 450
    for row in rows:
        assert list(row) == ["id", "subreddit", "title", "post", "summary"]
        assert all(isinstance(v, str) and v for v in row.values())
        assert row["id"].startswith("t3_")
        assert row["summary"].startswith(" ") and row["summary"].strip()
        assert 60 <= len(row["post"].split()) <= 250


def test_cnn_dailymail_schema():
    rows = read_jsonl("cnn_dailymail.jsonl")
    assert 150 <= len(rows) <= 250
    for row in rows:
        assert list(row) == ["article", "highlights", "id"]
        assert all(isinstance(v, str) and v for v in row.values())
        assert len(row["id"]) == 40 and HEX.fullmatch(row["id"])
        assert 150 <= len(row["article"].split()) <= 400
        assert len(row["highlights"].split("\n")) >= 2
    assert len({r["id"] for r in rows}) == len(rows)


def test_alpaca_eval_schema():
    rows = json.loads((SAMPLES / "alpaca_eval.json").read_text(encoding="utf-8"))
    assert isinstance(rows, list) and 150 <= len(rows) <= 250
    for row in rows:
        assert list(row) == ["dataset", "instruction", "output", "generator"]
        assert all(isinstance(v, str) and v for v in row.values())
        assert row["generator"] == "text_davinci_003"
    assert len({r["instruction"] for r in rows}) == len(rows)


def test_alpaca_eval_matches_real_file():
    if not REAL_ALPACA.exists():
        pytest.skip(f"{REAL_ALPACA} is absent")
    real = json.loads(REAL_ALPACA.read_text(encoding="utf-8"))
    ours = json.loads((SAMPLES / "alpaca_eval.json").read_text(encoding="utf-8"))
    assert isinstance(real, list) and isinstance(ours, list)
    real_keys = {tuple(r) for r in real}
    assert {tuple(r) for r in ours} == real_keys
    assert {r["dataset"] for r in ours} == {r["dataset"] for r in real}
    assert {r["generator"] for r in ours} == {r["generator"] for r in real}
    for key in real[0]:
        assert type(ours[0][key]) is type(real[0][key])


# --------------------------------------------------------------------------------------------------
# The hidden rule: chosen = on topic, concise, not repetitive
# --------------------------------------------------------------------------------------------------


@functools.cache
def nouns_in(text: str) -> frozenset[str]:
    """The topic words (nouns of the generator's vocabulary, all single words) in ``text``."""
    return frozenset(re.findall(r"[^\W\d_]+", text.lower())) & TOPIC_NOUNS


def coverage(source: str, text: str) -> float:
    """Share of the source's topic words that ``text`` mentions (0 if the source has none)."""
    words = nouns_in(source)
    return len(words & nouns_in(text)) / len(words) if words else 0.0


def repeated_4grams(text: str) -> float:
    tokens = re.findall(r"\w+", text.lower())
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def check_rule(pairs: list[tuple[str, str, str]], min_gap: float) -> None:
    """``pairs``: (source, preferred, other). Preferred is more on topic, shorter, less repetitive."""
    cov_p = [coverage(s, p) for s, p, _ in pairs]
    cov_o = [coverage(s, o) for s, _, o in pairs]
    assert statistics.mean(cov_p) > statistics.mean(cov_o) + min_gap
    wins = sum(a > b for a, b in zip(cov_p, cov_o))
    losses = sum(a < b for a, b in zip(cov_p, cov_o))
    assert wins > 3 * losses
    assert statistics.mean(len(p.split()) for _, p, _ in pairs) < statistics.mean(
        len(o.split()) for _, _, o in pairs
    )
    assert statistics.mean(repeated_4grams(p) for _, p, _ in pairs) < statistics.mean(
        repeated_4grams(o) for _, _, o in pairs
    )


def test_hidden_rule_ultrafeedback_binarized():
    rows = [r for r in read_jsonl("ultrafeedback_binarized.jsonl") if r["score_chosen"] > r["score_rejected"]]
    check_rule([(r["prompt"], r["chosen"][1]["content"], r["rejected"][1]["content"]) for r in rows], 0.3)


def test_hidden_rule_ultrafeedback_cleaned():
    rows = read_jsonl("ultrafeedback_cleaned.jsonl")
    check_rule([(r["prompt"], r["chosen"][1]["content"], r["rejected"][1]["content"]) for r in rows], 0.3)


def test_hidden_rule_tldr_with_noise_at_low_confidence():
    rows = read_jsonl("tldr_comparisons.jsonl")

    def triple(r):
        source = r["info"]["post"] or r["info"]["article"]
        return source, r["summaries"][r["choice"]]["text"], r["summaries"][1 - r["choice"]]["text"]

    check_rule([triple(r) for r in rows], 0.15)

    def agreement(sel):  # preferred covers more topic words / differs, among pairs that differ
        cov = [(coverage(s, p), coverage(s, o)) for s, p, o in map(triple, sel)]
        cov = [(a, b) for a, b in cov if a != b]
        return sum(a > b for a, b in cov) / len(cov)

    low = [r for r in rows if r["extra"]["confidence"] is not None and r["extra"]["confidence"] <= 3]
    high = [r for r in rows if r["extra"]["confidence"] is not None and r["extra"]["confidence"] >= 7]
    assert agreement(high) >= 0.9
    assert agreement(low) < agreement(high)


def test_reference_texts_are_on_topic():
    sft = read_jsonl("tldr_sft.jsonl")
    assert statistics.mean(coverage(r["post"], r["summary"]) for r in sft) > 0.4
    cnn = read_jsonl("cnn_dailymail.jsonl")
    assert statistics.mean(coverage(r["article"], r["highlights"]) for r in cnn) > 0.4
