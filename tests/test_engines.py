"""Engines behind `generate(prompts, sampling)`: the transformers engine on the tiny model
(seeded per row, batch-independent, greedy equal to HF greedy, top-p, stop strings, EOS,
cancel, streaming), the vLLM adapter's contract against a stand-in with vLLM's documented
interface, backend choice, and the OpenAI request checks. No Ray."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from drdo_ray.data.tokenize import encode_prompt
from drdo_ray.errors import UserError
from drdo_ray.generation.engines import (
    Completion,
    Engine,
    GenerationRequest,
    TransformersEngine,
    VLLMEngine,
    encode_chat,
    encode_text,
    find_stop,
    format_prompt,
    make_engine,
    mix_seed,
    resolve_backend,
)
from drdo_ray.generation.row_sampler import RowSampler
from drdo_ray.generation.sampling_params import SamplingParams
from drdo_ray.generation.vllm_support import head_size, vllm_engine_kwargs, vllm_unusable_reason
from drdo_ray.serve.openai_schema import APIError, ChatCompletionRequest, CompletionRequest, parse_request

PROMPTS = ["The quick brown fox", "Summarize: the cat sat on the mat and", "hello"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> TransformersEngine:
    return TransformersEngine(tiny_model_dir)


def test_sampling_params_are_checked() -> None:
    for bad in (
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"n": 0},
        {"n": 2, "temperature": 0.0},  # greedy decoding has one answer (vLLM refuses it too)
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams(stop=["a", ""]).stop == ("a",)
    assert SamplingParams(stop=[]).stop is None


def test_interface_and_shapes(engine) -> None:
    assert isinstance(engine, Engine)
    out = engine.generate(PROMPTS, SamplingParams(temperature=0.7, top_p=0.8, max_tokens=6, n=2, seed=1))
    assert len(out) == len(PROMPTS) and all(len(choices) == 2 for choices in out)
    for choices in out:
        for c in choices:
            assert isinstance(c, Completion) and isinstance(c.text, str)
            assert 1 <= c.num_tokens <= 6
            assert c.finish_reason == "length" or c.num_tokens <= 6
    assert out[0][0].text != out[0][1].text  # the n samples of one prompt differ


def test_seeded_rows_do_not_depend_on_the_batch(engine) -> None:
    sampling = SamplingParams(temperature=0.9, top_p=0.8, max_tokens=12, seed=7)
    alone = engine.generate([PROMPTS[1]], sampling)[0]
    batched = engine.generate(PROMPTS, sampling)[1]  # other prompts, other padding
    again = engine.generate([PROMPTS[1]], sampling)[0]
    assert alone == batched == again
    other = [
        engine.generate([PROMPTS[1]], SamplingParams(temperature=0.9, max_tokens=12, seed=s))[0][0].text
        for s in (8, 9, 10)
    ]
    assert any(text != alone[0].text for text in other)


def test_greedy_matches_hf_generate_and_tiny_top_p_is_greedy(engine) -> None:
    ids = engine.encode(PROMPTS[0])
    with torch.inference_mode():
        ref = engine.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=10,
            min_new_tokens=10,
            pad_token_id=engine.pad_id,
        )[0, len(ids) :]
    expected = engine.tokenizer.decode(ref, skip_special_tokens=True)
    # Batched with longer prompts: left padding must not change the greedy path.
    greedy = engine.generate(
        [PROMPTS[1], PROMPTS[0]], SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    )[1][0]
    assert greedy.text == expected and greedy.num_tokens == 10 and greedy.finish_reason == "length"
    for top_p in (1e-6, 5e-324):  # the latter is 0 in float32: the top token still stays
        nucleus = engine.generate(
            [PROMPTS[0]], SamplingParams(temperature=1.0, top_p=top_p, max_tokens=10, ignore_eos=True, seed=3)
        )[0][0]
        assert nucleus.text == expected


def test_stop_strings_eos_ignore_eos_and_cancel(engine, monkeypatch) -> None:
    sampling = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    full = engine.generate([PROMPTS[0]], sampling)[0][0].text
    stop = full[4:6]
    cut = engine.generate([PROMPTS[0]], SamplingParams(temperature=0.0, max_tokens=12, stop=[stop]))[0][0]
    assert cut.finish_reason == "stop" and cut.text == full[: full.find(stop)] and stop not in cut.text

    first = engine.encode(PROMPTS[0])
    first_token = engine.model(torch.tensor([first])).logits[0, -1].argmax().item()
    monkeypatch.setattr(engine, "eos_ids", {first_token})  # greedy's first token becomes EOS
    eos = engine.generate([PROMPTS[0]], SamplingParams(temperature=0.0, max_tokens=12))[0][0]
    assert (eos.text, eos.num_tokens, eos.finish_reason) == ("", 1, "stop")
    ignored = engine.generate([PROMPTS[0]], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))[
        0
    ][0]
    assert ignored.num_tokens == 12 and ignored.finish_reason == "length"
    monkeypatch.undo()

    request = GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=50, seed=1, ignore_eos=True))
    request.cancel.set()
    (cancelled,) = engine.generate_requests([request])[0]
    assert cancelled.num_tokens == 1


def test_stream_deltas_add_up_and_cancel_stops(engine) -> None:
    sampling = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=16, n=2, seed=11, stop=("zz",))
    events: list[tuple[int, str, Completion | None]] = []
    finals = engine.generate_stream(
        GenerationRequest(PROMPTS[2], sampling), lambda i, t, d: events.append((i, t, d))
    )
    plain = engine.generate([PROMPTS[2]], sampling)[0]
    assert sorted(finals, key=lambda c: c.text) == sorted(plain, key=lambda c: c.text)
    for index in (0, 1):
        mine = [(t, d) for i, t, d in events if i == index]
        assert "".join(t for t, _ in mine) == plain[index].text
        assert [d for _, d in mine if d is not None] == [plain[index]]  # exactly one final event, last
        assert mine[-1][1] is not None

    request = GenerationRequest(PROMPTS[2], SamplingParams(max_tokens=200, seed=1, ignore_eos=True))
    seen: list[str] = []

    def on_delta(i: int, text: str, done: Completion | None) -> None:
        seen.append(text)
        if len(seen) == 3:
            request.cancel.set()  # what the server does when the client disconnects

    (stopped,) = engine.generate_stream(request, on_delta)
    assert stopped.num_tokens < 20


def test_prompt_encoding_matches_encode_prompt(engine) -> None:
    tok = engine.tokenizer
    text = "Write a haiku about rivers."
    assert engine.encode(format_prompt(tok, text, chat=True)) == encode_prompt(tok, text, chat=True)
    assert engine.encode(format_prompt(tok, text, chat=False)) == encode_prompt(tok, text, chat=False)
    assert encode_chat(tok, [{"role": "user", "content": text}]) == encode_prompt(tok, text, chat=True)
    assert engine.encode([5, 6, 7]) == [5, 6, 7]

    class BosTokenizer:  # a template that writes BOS itself must not get a second one
        bos_token = "<s>"

        def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
            return {"input_ids": ([1] if add_special_tokens else []) + [len(w) for w in text.split()]}

    assert encode_text(BosTokenizer(), "<s> hi there") == [3, 2, 5]
    assert encode_text(BosTokenizer(), "hi there") == [1, 2, 5]
    assert find_stop("abcabc", ["c", "b"]) == 1 and find_stop("abc", ["x"]) is None
    assert mix_seed(1, "a") == mix_seed(1, "a") != mix_seed(1, "b")


def test_row_sampler_draws_from_each_rows_distribution() -> None:
    """Batched inverse-CDF sampling: empirical frequencies follow softmax(logits / T), top-p
    keeps only the nucleus, temperature 0 is argmax, and a row's draws depend on its seed and
    step only (not on its batch-mates)."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    steps = 4000

    def draws(temps: list[float], top_ps: list[float], seeds: list[int], rows: Any = None) -> torch.Tensor:
        sampler = RowSampler(temps, top_ps, seeds)
        scores = (rows if rows is not None else logits.expand(len(seeds), -1)).clone()
        picks = []
        for _ in range(steps):
            out = sampler(None, scores.clone())
            assert bool(((out == 0).sum(-1) == 1).all())  # exactly one kept token per row
            picks.append(out.argmax(-1))
        return torch.stack(picks, dim=1)

    picks = draws([1.0, 1.0, 0.0], [1.0, 0.7, 1.0], [1, 2, 3])
    freq = torch.stack([(picks[0] == k).float().mean() for k in range(4)])
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    assert set(picks[1].tolist()) == {0, 1}  # nucleus 0.7: tokens 0 and 1 only (0.5 + 0.3 >= 0.7)
    assert abs((picks[1] == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    assert set(picks[2].tolist()) == {0}  # greedy
    hot = draws([2.0], [1.0], [1])
    assert (hot[0] == 3).float().mean() > 0.08  # a higher temperature flattens the distribution

    # Row 0 alone vs beside different rows: identical draws for its seed.
    other = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]))
    mixed = draws([1.0, 0.5, 1.5], [1.0, 0.9, 1.0], [1, 7, 8], torch.cat([logits[None], other]))
    assert torch.equal(mixed[0], picks[0][:steps])
    assert not torch.equal(draws([1.0], [1.0], [2])[0], picks[0])  # another seed, other draws
    ban = RowSampler([0.0], [1.0], [1], ban_eos_rows=[0], eos_ids=[0])(None, logits[None].clone())
    assert ban.argmax(-1).item() == 1  # EOS (token 0 here) banned for an ignore_eos row


# ------------------------------------------------------------------------ vLLM adapter


@dataclass
class FakeSamplingParams:
    """vllm.SamplingParams' constructor, as far as the adapter uses it."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list[str] | None = None
    ignore_eos: bool = False


@dataclass
class FakeCompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput] = field(default_factory=list)


class FakeLLM:
    """A stand-in for vllm.LLM: generate(prompts, sampling_params, use_tqdm) -> RequestOutputs."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[Any], list[FakeSamplingParams]]] = []

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(
        self, prompts: list[Any], sampling_params: list[FakeSamplingParams], use_tqdm: bool = True
    ) -> list[Any]:
        self.calls.append((prompts, sampling_params))
        outs = []
        for prompt, params in zip(prompts, sampling_params):
            ids = prompt["prompt_token_ids"]
            outs.append(
                FakeRequestOutput(
                    ids,
                    [
                        FakeCompletionOutput(
                            f"{len(ids)}-{j}-{params.temperature}",
                            list(range(params.max_tokens - j)),
                            "length" if j == 0 else ("stop" if j == 1 else None),
                        )
                        for j in range(params.n)
                    ],
                )
            )
        return outs


@pytest.mark.parametrize("extras", [{}, {"stop": ("\n", "END"), "ignore_eos": True}])
def test_every_backend_reads_its_sampling_from_the_one_type(engine, extras) -> None:
    """The transformers engine's SamplingParams, the vLLM engine's vllm.SamplingParams, Ray Data
    LLM's vLLM row and the OpenAI request of the http backend all come from one SamplingParams;
    the server reads that request back into the same SamplingParams."""
    from drdo_ray.generation.sampling import http_request, row_sampling, vllm_request
    from drdo_ray.serve.openai_schema import CompletionRequest

    sp = SamplingParams(temperature=0.7, top_p=0.8, max_tokens=6, n=1, seed=5, **extras)
    row = {"temperature": 0.7, "seed": 5, "prompt_ids": [4, 5, 6], "prompt_text": "hi"}
    if not extras:  # the generate driver's rows: its one SamplingParams per row
        assert row_sampling(row, 0.8, 6) == sp
        assert vllm_request(row, 0.8, 6)["sampling_params"] == sp.vllm_kwargs()
        assert http_request(row, "served", 0.8, 6)["payload"] == {
            "model": "served",
            "prompt": [4, 5, 6],
            **sp.openai_payload(),
        }
    fake = FakeLLM(engine.tokenizer)
    VLLMEngine("some/model", llm=fake, sampling_params_cls=FakeSamplingParams).generate([[4, 5, 6]], sp)
    stop = list(extras["stop"]) if extras else None
    expected = FakeSamplingParams(
        n=1, temperature=0.7, top_p=0.8, max_tokens=6, seed=5, stop=stop, ignore_eos=bool(extras)
    )
    assert fake.calls[0][1] == [expected] == [FakeSamplingParams(**sp.vllm_kwargs())]
    request = CompletionRequest.model_validate({"model": "m", "prompt": [4, 5, 6], **sp.openai_payload()})
    back = SamplingParams(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        n=request.n,
        seed=request.seed,
        stop=request.stop,
        ignore_eos=request.ignore_eos,
    )
    assert back == sp


def test_vllm_adapter_contract(engine) -> None:
    fake = FakeLLM(engine.tokenizer)
    vllm_engine = VLLMEngine("some/model", llm=fake, sampling_params_cls=FakeSamplingParams)
    assert isinstance(vllm_engine, Engine) and vllm_engine.name == "model"
    chat = format_prompt(engine.tokenizer, "hi", chat=True)
    out = vllm_engine.generate(
        [chat, [4, 5, 6]], SamplingParams(temperature=0.5, top_p=0.8, max_tokens=5, n=3, seed=9, stop=("\n",))
    )
    prompts, params = fake.calls[0]
    assert prompts == [
        {"prompt_token_ids": encode_prompt(engine.tokenizer, "hi", chat=True)},
        {"prompt_token_ids": [4, 5, 6]},
    ]
    assert params[0] == FakeSamplingParams(n=3, temperature=0.5, top_p=0.8, max_tokens=5, seed=9, stop=["\n"])
    assert [[c.finish_reason for c in choices] for choices in out] == [["length", "stop", "stop"]] * 2
    assert out[1][0] == Completion("3-0-0.5", 5, "length") and out[1][1].num_tokens == 4
    # Requests with different sampling share one llm.generate call (the server's batches).
    vllm_engine.generate_requests(
        [
            GenerationRequest("a", SamplingParams(temperature=0.1)),
            GenerationRequest("b", SamplingParams(temperature=0.9, ignore_eos=True)),
        ]
    )
    assert [p.temperature for p in fake.calls[1][1]] == [0.1, 0.9] and fake.calls[1][1][1].ignore_eos


def test_backend_choice(tiny_model_dir, monkeypatch) -> None:
    assert resolve_backend("transformers") == "transformers"
    # The tiny model's head size (16) is one vLLM's CPU kernels lack: auto keeps transformers
    # whether vLLM is installed or not, and an explicit vllm says why it cannot.
    assert head_size(tiny_model_dir) == 16
    assert resolve_backend("auto", tiny_model_dir) == "transformers"
    with pytest.raises(UserError):
        resolve_backend("tgi")
    with pytest.raises(UserError, match="vLLM"):
        make_engine(tiny_model_dir, "vllm")
    assert isinstance(make_engine(tiny_model_dir, "auto"), TransformersEngine)

    import drdo_ray.generation.vllm_support as support

    monkeypatch.setattr(support, "vllm_installed", lambda: True)
    monkeypatch.setattr(support, "vllm_cpu_build", lambda: True)
    assert vllm_unusable_reason(tiny_model_dir, gpu=False) is not None
    assert vllm_unusable_reason(None, gpu=False) is None  # CPU included: auto picks vLLM there
    monkeypatch.setattr(support, "vllm_cpu_build", lambda: False)
    assert "CUDA build" in (vllm_unusable_reason(None, gpu=False) or "")
    assert vllm_unusable_reason(tiny_model_dir, gpu=True) is None
    monkeypatch.setattr(support, "vllm_installed", lambda: False)
    assert "not installed" in (vllm_unusable_reason(None, gpu=True) or "")


def test_vllm_engine_kwargs_on_cpu() -> None:
    cpu = vllm_engine_kwargs("auto", {"enforce_eager": True}, cpu=True)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] and cpu["kv_cache_memory_bytes"] > 0
    assert vllm_engine_kwargs("bfloat16", {"gpu_memory_utilization": 0.3}, cpu=True) == {
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.3,
    }
    assert vllm_engine_kwargs("auto", {}, cpu=False) == {"dtype": "auto"}


# ---------------------------------------------------------------------- request checks


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": "x", "temperature": 2.1}, "temperature"),
        ({"model": "m", "prompt": "x", "temperature": -1}, "temperature"),
        ({"model": "m", "prompt": "x", "top_p": 0}, "top_p"),
        ({"model": "m", "prompt": "x", "top_p": 1.01}, "top_p"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "prompt": "x", "n": 0}, "n"),
        ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "m", "prompt": 5}, "prompt"),
        ({"prompt": "x"}, "model"),
        ({"model": "m", "prompt": "x", "logprobs": 3}, None),
        ({"model": "m", "prompt": "a\ud800b"}, None),  # a lone surrogate: not text
        ({"model": "m", "prompt": "x", "stop": ["\udfff"]}, None),
    ],
)
def test_bad_completion_requests(body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(APIError) as info:
        parse_request(CompletionRequest, json.dumps(body).encode())
    assert info.value.status == 400
    if param:
        assert info.value.param is not None and info.value.param.startswith(param)
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


def test_request_parsing() -> None:
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        with pytest.raises(APIError) as info:
            parse_request(CompletionRequest, raw)
        assert info.value.status == 400 and info.value.code == "invalid_json"
    req = parse_request(CompletionRequest, b'{"model": "m", "prompt": [1, 2, 3], "stop": "x", "user": "u"}')
    assert req.prompts() == [[1, 2, 3]] and req.stop == ["x"]
    chat = parse_request(
        ChatCompletionRequest,
        json.dumps(
            {
                "model": "m",
                "max_completion_tokens": 7,
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                    },
                ],
            }
        ).encode(),
    )
    assert chat.max_tokens == 7
    assert chat.chat() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    with pytest.raises(APIError):
        parse_request(ChatCompletionRequest, b'{"model": "m", "messages": []}')
    image = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
    }
    with pytest.raises(APIError, match="only text content parts") as info:
        parse_request(ChatCompletionRequest, json.dumps(image).encode())
    assert info.value.status == 400 and info.value.param == "messages.0"


def test_cancel_event_is_per_request() -> None:
    a, b = GenerationRequest("x", SamplingParams()), GenerationRequest("y", SamplingParams())
    a.cancel.set()
    assert isinstance(a.cancel, threading.Event) and not b.cancel.is_set()
