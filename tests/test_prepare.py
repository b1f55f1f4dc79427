"""`drdo-ray data prepare` end to end on Ray Data: bad input is quarantined with reasons and
counted, good rows are written, and user errors are one line with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drdo_ray.cli import main

# Real public samples live beside the repo (../shared/data/real), never inside it.
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _tldr(i: int, *, confidence: int | None, chosen: str, rejected: str, batch: str = "batch3") -> dict:
    return {
        "info": {
            "id": f"p{i}",
            "post": f"post {i} about my dog" + " and my cat" * i,
            "title": f"title {i}",
            "subreddit": "dogs",
            "site": None,
            "article": None,
        },
        "summaries": [
            {"text": chosen, "policy": "a", "note": None},
            {"text": rejected, "policy": "b", "note": None},
        ],
        "choice": 0,
        "worker": "w",
        "batch": batch,
        "split": "train",
        "extra": {"confidence": confidence},
    }


@pytest.fixture
def messy_tldr(tmp_path: Path) -> Path:
    good = [
        _tldr(0, confidence=9, chosen=" my dog is sick", rejected=" I went to the vet with a cat today"),
        _tldr(1, confidence=1, chosen=" dog sick", rejected=" dog ill"),
        _tldr(2, confidence=5, chosen=" dog barks at night", rejected=" a dog barks at noon"),
        _tldr(3, confidence=None, chosen=" dog naps", rejected=" a cat naps all day long"),
    ]
    lines = [json.dumps(r).encode() for r in good]
    lines += [
        b'{"info": {"id": "bad", "post": "caf\xe9 life"}}',  # not UTF-8
        json.dumps(good[0]).encode()[:50],  # truncated
        json.dumps({**good[0], "choice": 3}).encode(),
        json.dumps(_tldr(9, confidence=4, chosen=" same", rejected=" same")).encode(),
        json.dumps(_tldr(8, confidence=4, chosen=" x", rejected=" y", batch="cnndm2")).encode(),
        json.dumps({**good[0], "summaries": None}).encode(),
        b"",  # a blank line is not a record
    ]
    path = tmp_path / "tldr.jsonl"
    path.write_bytes(b"\n".join(lines))
    return path


def _run(*argv: str) -> int:
    return main(["data", "prepare", *argv])


def test_messy_input_is_quarantined_and_counted(ray_session, messy_tldr, tmp_path):
    out = tmp_path / "out"
    assert _run("--source", "tldr", "--input", str(messy_tldr), "--out", str(out)) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_read"], stats["rows_valid"], stats["rows_rejected"]) == (10, 4, 6)
    assert stats["rejected_by_reason"] == {
        "excluded_cnndm_batch": 1,
        "identical_responses": 1,
        "invalid_choice": 1,
        "invalid_json": 1,
        "invalid_utf8": 1,
        "missing_field": 1,
    }
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["origin"] for r in rejects) == sorted(f"tldr.jsonl:{n}" for n in range(5, 11))
    assert all(r["raw"] for r in rejects)
    table = pq.read_table(out / "data")
    assert sorted(i.rsplit("-", 1)[0] for i in table["id"].to_pylist()) == [f"tldr-p{i}" for i in range(4)]
    assert {"id", "source", "prompt", "chosen", "rejected", "confidence", "split", "difficulty"} <= set(
        table.column_names
    )


def test_tldr_easy_split_with_tokenizer(ray_session, messy_tldr, tmp_path, tiny_model_dir):
    out = tmp_path / "easy"
    code = _run(
        "--source",
        "tldr",
        "--input",
        str(messy_tldr),
        "--out",
        str(out),
        "--tldr-split",
        "easy",
        "--tokenizer",
        str(tiny_model_dir),
    )
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    tldr = stats["tldr"]
    assert tldr["distance_tokens"] == "tokenizer"
    assert tldr["confidence_p50"] == 5.0  # rated confidences 9, 1, 5
    table = pq.read_table(out / "data").to_pylist()
    assert {r["difficulty"] for r in table} == {"easy"}
    assert len(table) == stats["rows_written"] == tldr["splits"]["easy"]["count"]
    for row in table:  # token ids travel with the row, responses end with EOS
        assert row["prompt_len"] == len(row["prompt_ids"]) > 0
        assert row["chosen_ids"][-1] == row["rejected_ids"][-1]


def test_length_filter_rejects_long_rows(ray_session, messy_tldr, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from drdo_ray.data.sources import SOURCES
    from drdo_ray.data.tokenize import encode_prompt, encode_response

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    good = [
        SOURCES["tldr"].normalize(json.loads(line), None) for line in messy_tldr.read_bytes().splitlines()[:4]
    ]
    prompt_lens = sorted(len(encode_prompt(tok, r["prompt"], chat=False)) for r in good)
    totals = sorted(
        len(encode_prompt(tok, r["prompt"], chat=False))
        + max(len(encode_response(tok, r["chosen"])), len(encode_response(tok, r["rejected"])))
        for r in good
    )
    # A prompt cap between the prompt lengths rejects exactly the rows whose prompt exceeds it.
    assert prompt_lens[0] < prompt_lens[-1]
    cap = prompt_lens[1]
    out = tmp_path / "capped"
    assert (
        _run(
            "--source",
            "tldr",
            "--input",
            str(messy_tldr),
            "--out",
            str(out),
            "--tokenizer",
            str(tiny_model_dir),
            "--set",
            f"max_prompt_length={cap}",
            "--set",
            f"max_length={totals[-1] + 100}",
        )
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejected_by_reason"]["prompt_too_long"] == sum(n > cap for n in prompt_lens)
    # A total cap under the longest row rejects the rows that exceed it, as too_long.
    limit = totals[-1] - 1
    out = tmp_path / "short"
    assert (
        _run(
            "--source",
            "tldr",
            "--input",
            str(messy_tldr),
            "--out",
            str(out),
            "--tokenizer",
            str(tiny_model_dir),
            "--max-prompt-length",
            str(prompt_lens[-1]),
            "--max-length",
            str(limit),
        )
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejected_by_reason"]["too_long"] == sum(n > limit for n in totals) >= 1
    assert stats["rows_valid"] + stats["rows_rejected"] == stats["rows_read"] == 10
    rejected = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert any(r["reject_reason"] == "too_long" and r["id"].startswith("tldr-p") for r in rejected)


def test_parquet_input(ray_session, tmp_path):
    msgs = lambda a: [{"content": "q?", "role": "user"}, {"content": a, "role": "assistant"}]  # noqa: E731
    rows = [
        {
            "prompt": f"q{i}?",
            "prompt_id": f"{i:064x}",
            "chosen": msgs(f"good {i}"),
            "rejected": msgs(f"bad {i}"),
            "messages": msgs(f"good {i}"),
            "score_chosen": 8.0,
            "score_rejected": 8.0 if i % 2 else 3.0,
        }
        for i in range(6)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "uf.parquet")
    assert (
        _run(
            "--source", "ultrafeedback", "--input", str(tmp_path / "uf.parquet"), "--out", str(tmp_path / "o")
        )
        == 0
    )
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert (stats["rows_written"], stats["equal_score_pairs"]) == (6, 3)


@pytest.mark.skipif(not (REAL_DATA / "alpaca_eval_805.json").exists(), reason="real data not beside the repo")
def test_real_alpaca_eval_loads_unchanged(ray_session, tmp_path):
    real = json.loads((REAL_DATA / "alpaca_eval_805.json").read_text())
    assert (
        _run(
            "--source",
            "alpaca_eval",
            "--input",
            str(REAL_DATA / "alpaca_eval_805.json"),
            "--out",
            str(tmp_path),
        )
        == 0
    )
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (stats["rows_read"], stats["rows_written"], stats["rows_rejected"]) == (805, 805, 0)
    table = pq.read_table(tmp_path / "data").to_pylist()
    # Two real references are empty: the prompt is kept, its reference recorded as missing (null).
    assert sorted((r["prompt"], r["chosen"] or "") for r in table) == sorted(
        (r["instruction"], r["output"]) for r in real
    )
    assert sum(r["chosen"] is None for r in table) == sum(not r["output"] for r in real) == 2
    assert len({r["id"] for r in table}) == 805


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--source", "tldr", "--input", "no/such/file.jsonl"],
            "input path does not exist: no/such/file.jsonl",
        ),
        (
            ["--source", "ultrafeedback", "--input", "sample", "--tldr-split", "easy"],
            "applies to the tldr source only",
        ),
        (["--source", "tldr", "--input", "sample", "--set", "max_length=oops"], "max_length"),
    ],
)
def test_user_errors_are_one_line(ray_session, tmp_path, capsys, argv, message):
    assert _run(*argv, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("drdo-ray: error:") and message in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_zero_valid_rows_is_an_error(ray_session, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 1}\n{"nope\n')
    assert _run("--source", "ultrafeedback", "--input", str(bad), "--out", str(tmp_path / "o")) == 2
    assert "none of 2 rows is valid" in capsys.readouterr().err


def test_unknown_source_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run("--source", "reddit", "--input", "x", "--out", "y")
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_path_goes_through_from_huggingface(ray_session, tmp_path, monkeypatch, streaming):
    """The hub is unreachable here: `datasets.load_dataset` is replaced at that boundary by a real
    in-memory `datasets` object (map-style or streaming), and the rest of the path is real."""
    import datasets

    from drdo_ray.data.readers import sample_path
    from drdo_ray.data.sources import SOURCES

    records = [
        json.loads(line) for line in sample_path(SOURCES["ultrafeedback"]).read_text().splitlines()[:20]
    ]
    calls = []

    def fake_load_dataset(hub_id, config=None, *, split, revision=None, streaming=False):
        calls.append((hub_id, config, split, revision, streaming))
        ds = datasets.Dataset.from_list(records)
        return ds.to_iterable_dataset() if streaming else ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    argv = [
        "--source",
        "ultrafeedback",
        "--input",
        "HuggingFaceH4/ultrafeedback_binarized",
        "--out",
        str(tmp_path),
    ]
    if streaming:
        argv += ["--set", "streaming=true"]
    assert _run(*argv) == 0
    assert calls == [("HuggingFaceH4/ultrafeedback_binarized", None, "train_prefs", None, streaming)]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (stats["input_kind"], stats["rows_written"]) == ("hub", 20)
    table = pq.read_table(tmp_path / "data").to_pylist()
    assert {r["split"] for r in table} == {"train_prefs"}
    assert sorted(r["prompt"] for r in table) == sorted(r["prompt"] for r in records)


def test_input_kinds_follow_the_one_path_rule(tmp_path):
    """An input is the sample, files (local, file:// or an object store) or a hub id, by the same
    rule every model path follows (drdo_ray.artifacts)."""
    from drdo_ray.data.readers import describe_input
    from drdo_ray.data.sources import SOURCES
    from drdo_ray.errors import UserError

    tldr = SOURCES["tldr"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n")
    assert describe_input(tldr, "sample")[0] == "sample"
    assert describe_input(tldr, str(rows)) == ("files", str(rows.resolve()))
    assert describe_input(tldr, f"file://{rows}") == ("files", str(rows.resolve()))
    assert describe_input(tldr, "s3://bucket/rows/") == ("files", "s3://bucket/rows/")
    assert describe_input(tldr, "CarperAI/openai_summarize_tldr") == ("hub", "CarperAI/openai_summarize_tldr")
    assert describe_input(tldr, "imdb") == ("hub", "imdb")  # a hub id without an owner
    assert describe_input(tldr, "hub:./odd") == ("hub", "./odd")
    for missing in ("rows.jsonl", "./no/such", "no/such/file.jsonl"):
        with pytest.raises(UserError, match="input path does not exist"):
            describe_input(tldr, missing)
