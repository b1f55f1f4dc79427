"""`drdo-ray generate` on Ray Data with the transformers engine: every prompt x temperature x
sample, reference and chat copied from the prepared dataset, the same samples for the same
seed (across runs, batch sizes and actor counts), each sample equal to the engine's output
for its row seed, reuse/refusal of OUT, Parquet output, and bad input as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from generate_args import generate_argv

from drdo_ray.cli import main
from drdo_ray.data.tokenize import encode_prompt
from drdo_ray.generation.engines import TransformersEngine, mix_seed
from drdo_ray.generation.sampling import SAMPLES_SCHEMA, read_prompts
from drdo_ray.generation.sampling_params import SamplingParams

TEMPS = [0.2, 0.9]
MAX_NEW = 8


def _argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return generate_argv(model, data, out, *extra, temperatures=TEMPS, max_new_tokens=MAX_NEW, samples=2)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(prompts, tiny_model_dir) -> Path:
    out = prompts["root"] / "run1"
    assert main(_argv(tiny_model_dir, prompts["alpaca"], out, "--batch-size", "16")) == 0
    return out


def test_every_prompt_temperature_and_sample(first_run, prompts, tiny_model_dir) -> None:
    rows = _rows(first_run)
    dataset = read_prompts(str(prompts["alpaca"]), limit=3)
    assert len(rows) == 3 * len(TEMPS) * 2
    expected = [(p["prompt_id"], t, s) for p in dataset for t in TEMPS for s in range(2)]
    assert [(r["prompt_id"], r["temperature"], r["sample_idx"]) for r in rows] == expected
    by_id = {p["prompt_id"]: p for p in dataset}
    for r in rows:
        assert list(r) == SAMPLES_SCHEMA.names
        source = by_id[r["prompt_id"]]
        assert r["prompt"] == source["prompt_text"] and r["reference"] == source["reference"]
        assert r["chat"] is True and r["reference"]  # AlpacaEval: chat prompts with references
        assert r["model"] == str(Path(tiny_model_dir).resolve())
        assert 1 <= r["num_tokens"] <= MAX_NEW
        assert r["finish_reason"] in ("stop", "length")
        assert r["finish_reason"] == "stop" or r["num_tokens"] == MAX_NEW
    # The two samples of a prompt at a temperature differ (their seeds do).
    assert any(a["text"] != b["text"] for a, b in zip(rows[::2], rows[1::2]))
    meta = json.loads((first_run / "generation.json").read_text())
    for key in (
        "model",
        "backend",
        "temperatures",
        "top_p",
        "max_new_tokens",
        "samples_per_prompt",
        "seed",
        "prompts",
        "rows",
        "elapsed_s",
        "tokens_per_s",
    ):
        assert key in meta
    assert meta["backend"] == "transformers" and meta["rows"] == len(rows) and meta["temperatures"] == TEMPS
    assert meta["tokens"] == sum(r["num_tokens"] for r in rows)


def test_each_sample_is_the_engine_output_for_its_row_seed(first_run, tiny_model_dir) -> None:
    """Chat prompts went through the chat template (encode_prompt), each row has its own seed."""
    engine = TransformersEngine(tiny_model_dir)
    for r in _rows(first_run)[:4]:
        ids = encode_prompt(engine.tokenizer, r["prompt"], chat=r["chat"])
        seed = mix_seed(7, r["prompt_id"], repr(r["temperature"]), r["sample_idx"])
        (c,) = engine.generate(
            [ids], SamplingParams(temperature=r["temperature"], top_p=0.8, max_tokens=MAX_NEW, seed=seed)
        )[0]
        assert (c.text, c.num_tokens, c.finish_reason) == (r["text"], r["num_tokens"], r["finish_reason"])


def test_same_seed_same_samples_whatever_the_batching(first_run, prompts, tiny_model_dir) -> None:
    again = prompts["root"] / "run2"
    assert main(_argv(tiny_model_dir, prompts["alpaca"], again, "--batch-size", "16")) == 0
    assert (again / "samples.jsonl").read_bytes() == (first_run / "samples.jsonl").read_bytes()
    other = prompts["root"] / "run3"
    assert (
        main(_argv(tiny_model_dir, prompts["alpaca"], other, "--batch-size", "5", "--num-actors", "2")) == 0
    )
    assert _rows(other) == _rows(first_run)


def test_reuse_and_refuse(first_run, prompts, tiny_model_dir, capsys) -> None:
    before = (first_run / "generation.json").read_text()
    assert main(_argv(tiny_model_dir, prompts["alpaca"], first_run)) == 0
    assert "reused" in capsys.readouterr().err
    assert (first_run / "generation.json").read_text() == before
    argv = _argv(tiny_model_dir, prompts["alpaca"], first_run)
    argv[argv.index("--seed") + 1] = "8"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("drdo-ray: error:") and "seed" in err and len(err.splitlines()) == 1


def test_parquet_output_for_text_prompts(prompts, tiny_model_dir) -> None:
    out = prompts["root"] / "cnndm-out"
    argv = _argv(tiny_model_dir, prompts["cnndm"], out, "--format", "parquet", "--samples-per-prompt", "1")
    argv[argv.index("--limit") + 1] = "2"
    assert main(argv) == 0
    table = pq.read_table(out / "samples.parquet")
    assert table.schema.equals(SAMPLES_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == 2 * len(TEMPS) and not any(r["chat"] for r in rows)
    assert all(r["reference"] for r in rows) and not (out / "samples.jsonl").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--prompts": "/nonexistent/prompts"}, "does not exist"),
        ({"--temperatures": "0.2,3"}, "temperatures"),
        ({"--temperatures": ""}, "temperatures"),
        ({"--temperatures": "0.2,hot"}, "temperatures"),
        ({"--top-p": "0"}, "top_p"),
        ({"--model": "/nonexistent/model"}, "does not exist"),
        ({"--backend": "http"}, "endpoint"),
    ],
)
def test_bad_input_is_one_line(change, message, prompts, tiny_model_dir, tmp_path, capsys) -> None:
    argv = _argv(tiny_model_dir, prompts["alpaca"], tmp_path / "out")
    for flag, value in change.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("drdo-ray: error:") and message in err, err
    assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_not_a_prepared_dataset(tmp_path, tiny_model_dir, capsys) -> None:
    (tmp_path / "loose").mkdir()
    assert main(_argv(tiny_model_dir, tmp_path / "loose", tmp_path / "out")) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
