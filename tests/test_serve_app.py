"""The OpenAI-compatible Ray Serve app on local Ray with the tiny model, on a free port:
every route through the official `openai` client (streaming included), the parameters it
honours, auth, bad requests (OpenAI-style errors, never a 500, the replica survives), a
client that disconnects mid-stream, `generate --backend http` against the endpoint, and the
64-request load test (`drdo-ray bench serve`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

try:  # the openai client's HTTP library (httpx2 in this environment, httpx elsewhere)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from drdo_ray.cli import main
from drdo_ray.config import ServeConfig
from drdo_ray.errors import UserError

KEY = "test-key-123"
CAP = 1500  # max_tokens cap: long enough that a stream can be cut off midway


@pytest.fixture(scope="module")
def app(ray_session, tiny_model_dir) -> dict[str, Any]:
    from ray import serve

    from drdo_ray.serve.app import start

    url = start(
        ServeConfig(
            model=str(tiny_model_dir),
            port=0,
            api_key=KEY,
            backend="transformers",
            max_tokens_cap=CAP,
            max_batch_size=16,
            max_prompt_tokens=200,
            max_n=4,
        )
    )
    yield {"url": url, "port": int(url.rsplit(":", 1)[1]), "model": Path(tiny_model_dir).name}
    serve.shutdown()


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app['url']}/v1", api_key=KEY, max_retries=0)


def _stats(app) -> dict[str, Any]:
    return httpx.get(f"{app['url']}/stats", headers={"Authorization": f"Bearer {KEY}"}).json()


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_models(client, app) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [app["model"]]
    assert client.models.retrieve(app["model"]).id == app["model"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completions_n_usage_and_max_tokens(client, app) -> None:
    r = client.completions.create(
        model=app["model"],
        prompt="The quick brown fox",
        max_tokens=7,
        n=2,
        seed=1,
        temperature=0.7,
        top_p=0.8,
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    assert r.usage.prompt_tokens > 0 and 2 <= r.usage.completion_tokens <= 2 * 7
    assert r.choices[0].text != r.choices[1].text
    batch = client.completions.create(model=app["model"], prompt=["one", "two words"], max_tokens=3, seed=2)
    assert len(batch.choices) == 2 and batch.usage.completion_tokens <= 6
    fixed = client.completions.create(
        model=app["model"], prompt="x", max_tokens=9, extra_body={"ignore_eos": True}
    )
    assert fixed.usage.completion_tokens == 9 and fixed.choices[0].finish_reason == "length"


def test_seed_determinism_and_stop(client, app) -> None:
    def text(seed: int, **kw: Any) -> str:
        return (
            client.completions.create(
                model=app["model"],
                prompt="Once upon a time",
                max_tokens=12,
                seed=seed,
                temperature=0.9,
                extra_body={"ignore_eos": True},
                **kw,
            )
            .choices[0]
            .text
        )

    first = text(5)
    assert text(5) == first
    assert any(text(s) != first for s in (6, 7, 8))
    stop = first[3:5]
    cut = client.completions.create(
        model=app["model"],
        prompt="Once upon a time",
        max_tokens=12,
        seed=5,
        temperature=0.9,
        stop=[stop],
        extra_body={"ignore_eos": True},
    ).choices[0]
    assert cut.finish_reason == "stop" and cut.text == first[: first.find(stop)]


def test_chat(client, app) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    r = client.chat.completions.create(model=app["model"], messages=messages, max_tokens=6, seed=3, n=2)
    assert len(r.choices) == 2 and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens <= 12 and r.object == "chat.completion"
    again = client.chat.completions.create(model=app["model"], messages=messages, max_tokens=6, seed=3, n=2)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_streaming_matches_the_plain_answer(client, app) -> None:
    kw = {
        "model": app["model"],
        "max_tokens": 10,
        "seed": 4,
        "temperature": 0.8,
        "extra_body": {"ignore_eos": True},
    }
    plain = client.completions.create(prompt="Stream me", **kw).choices[0]
    chunks = list(client.completions.create(prompt="Stream me", stream=True, **kw))
    assert len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == plain.text
    assert chunks[-1].choices[0].finish_reason == "length"

    messages = [{"role": "user", "content": "Stream a chat"}]
    plain_chat = client.chat.completions.create(messages=messages, n=2, **kw)
    stream = client.chat.completions.create(
        messages=messages, n=2, stream=True, stream_options={"include_usage": True}, **kw
    )
    texts, finish = ["", ""], [None, None]
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finish[choice.index] = choice.finish_reason or finish[choice.index]
    assert texts == [c.message.content for c in plain_chat.choices]
    assert finish == ["length", "length"]
    assert usage is not None and usage.completion_tokens == plain_chat.usage.completion_tokens == 20


def test_auth(app) -> None:
    url = app["url"]
    assert httpx.get(f"{url}/health").status_code == 200  # no key needed
    before = _stats(app)
    body = {"model": app["model"], "prompt": "hi", "max_tokens": 5}
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEY},
        {"Authorization": "Basic " + KEY},
    ):
        err = _error(httpx.post(f"{url}/v1/completions", json=body, headers=headers), 401)
        assert err["code"] == "invalid_api_key"
        _error(httpx.get(f"{url}/v1/models", headers=headers), 401)
        _error(httpx.post(f"{url}/v1/chat/completions", content=b"{bad json", headers=headers), 401)
    after = _stats(app)
    assert after["completion_tokens"] == before["completion_tokens"]  # no generation happened
    assert after["batches"] == before["batches"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()


def test_bad_requests_get_openai_errors(app, client) -> None:
    url, model = app["url"], app["model"]
    auth = {"Authorization": f"Bearer {KEY}"}

    def post(path: str, body: Any) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(
            f"{url}{path}", content=content, headers={**auth, "Content-Type": "application/json"}
        )

    cases = [
        ("/v1/completions", b'{"model": "x", "prompt": ', 400, None),
        ("/v1/completions", b"[]", 400, None),
        ("/v1/chat/completions", b"\xff\xfe", 400, None),
        ("/v1/completions", {"model": model, "prompt": "x", "temperature": 2.5}, 400, "temperature"),
        ("/v1/completions", {"model": model, "prompt": "x", "temperature": -0.5}, 400, "temperature"),
        ("/v1/completions", {"model": model, "prompt": "x", "top_p": 0}, 400, "top_p"),
        ("/v1/completions", {"model": model, "prompt": "x", "top_p": 1.5}, 400, "top_p"),
        ("/v1/completions", {"model": model, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"model": model, "prompt": "x", "max_tokens": CAP + 1}, 400, "max_tokens"),
        ("/v1/completions", {"model": model, "prompt": "x", "n": 5}, 400, "n"),
        ("/v1/completions", {"model": model, "prompt": "x", "n": 2, "temperature": 0}, 400, "n"),
        ("/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, "model"),
        (
            "/v1/chat/completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model",
        ),
        ("/v1/completions", {"model": model, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": model, "prompt": []}, 400, "prompt"),
        ("/v1/completions", {"model": model, "prompt": [10**9]}, 400, "prompt"),
        ("/v1/completions", {"model": model, "prompt": "word " * 400}, 400, "prompt"),  # over 200 tokens
        (
            "/v1/completions",
            {"model": model, "prompt": "x", "stream": True, "temperature": 9},
            400,
            "temperature",
        ),
        ("/v1/chat/completions", {"model": model, "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": ""}]},
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "tool", "content": "x"}]},
            400,
            "messages",
        ),
        ("/v1/chat/completions", {"model": model}, 400, "messages"),
    ]
    for path, body, status, param in cases:
        err = _error(post(path, body), status)
        if param:
            assert (err["param"] or "").startswith(param), (body, err)
    huge = httpx.post(
        f"{url}/v1/completions", content=b'{"prompt": "' + b"x" * (2 << 20) + b'"}', headers=auth
    )
    _error(huge, 413)
    _error(httpx.get(f"{url}/v1/nothing-here", headers=auth), 404)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model, prompt="x", temperature=3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    # The replica survived all of it.
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert (
        client.completions.create(model=model, prompt="still here", max_tokens=2).usage.completion_tokens <= 2
    )


def _wait_cancelled(app, before: dict[str, Any]) -> dict[str, Any]:
    """Stats once the cancelled generation has stopped and been counted."""
    deadline = time.time() + 30
    while time.time() < deadline:
        stats = _stats(app)
        if (
            stats["cancelled"] > before["cancelled"]
            and stats["cancelled_tokens"] > before["cancelled_tokens"]
        ):
            return stats
        time.sleep(0.1)
    raise AssertionError(f"no cancelled generation was counted: {_stats(app)}")


def test_disconnect_mid_stream_stops_generation(app, client) -> None:
    url, model = app["url"], app["model"]
    before = _stats(app)
    body = {"model": model, "prompt": "go on and on", "max_tokens": CAP, "stream": True, "ignore_eos": True}
    with httpx.stream(
        "POST", f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = 0
        for line in response.iter_lines():
            lines += bool(line.startswith("data: "))
            if lines >= 3:
                break  # leave mid-stream: the context manager closes the connection
    after = _wait_cancelled(app, before)
    assert after["cancelled"] == before["cancelled"] + 1
    # It stopped a few steps after the client left, not CAP tokens later.
    assert 0 < after["cancelled_tokens"] - before["cancelled_tokens"] < CAP // 3
    assert after["completion_tokens"] == before["completion_tokens"]
    assert client.completions.create(model=model, prompt="next", max_tokens=2).usage.completion_tokens <= 2


def test_disconnect_while_batched_stops_generation(app, client) -> None:
    url, model = app["url"], app["model"]
    # How long CAP tokens take here, so the client can leave well before the end.
    t0 = time.perf_counter()
    client.completions.create(model=model, prompt="warm", max_tokens=CAP, extra_body={"ignore_eos": True})
    full_s = time.perf_counter() - t0
    before = _stats(app)
    body = {"model": model, "prompt": "go on and on", "max_tokens": CAP, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{url}/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=max(0.3, full_s / 4),
        )
    after = _wait_cancelled(app, before)
    assert after["cancelled"] == before["cancelled"] + 1
    assert 0 < after["cancelled_tokens"] - before["cancelled_tokens"] < CAP
    assert _stats(app)["active"] == 0


def test_generate_http_backend_matches_local(app, tmp_path, ray_session, tiny_model_dir) -> None:
    """`drdo-ray generate --backend http` (Ray Data LLM HttpRequestProcessor) against this
    endpoint gives the same samples as the local transformers backend for the same seed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompts = tmp_path / "prompts"
    (prompts / "data").mkdir(parents=True)
    rows = [
        {"id": f"p{i}", "source": "test", "prompt": text, "chosen": f"ref {i}", "chat": i % 2 == 0}
        for i, text in enumerate(["Summarize this.", "Tell me a story", "Why is the sky blue?"])
    ]
    pq.write_table(pa.Table.from_pylist(rows), prompts / "data" / "part-0.parquet")
    (prompts / "stats.json").write_text(json.dumps({"source": "test", "rows_written": 3}))
    common = [
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--temperatures",
        "0.5,0.9",
        "--max-new-tokens",
        "6",
        "--samples-per-prompt",
        "2",
        "--seed",
        "3",
    ]
    assert (
        main(
            [
                "generate",
                *common,
                "--backend",
                "http",
                "--endpoint",
                app["url"],
                "--api-key",
                KEY,
                "--out",
                str(tmp_path / "http"),
            ]
        )
        == 0
    )
    assert main(["generate", *common, "--backend", "transformers", "--out", str(tmp_path / "local")]) == 0
    http = [json.loads(x) for x in (tmp_path / "http" / "samples.jsonl").read_text().splitlines()]
    local = [json.loads(x) for x in (tmp_path / "local" / "samples.jsonl").read_text().splitlines()]
    assert len(http) == len(local) == 3 * 2 * 2
    strip = ("model",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in http] == [
        {k: v for k, v in r.items() if k not in strip} for r in local
    ]
    assert {r["model"] for r in http} == {app["model"]}
    meta = json.loads((tmp_path / "http" / "generation.json").read_text())
    assert meta["backend"] == "http" and meta["served_model_name"] == app["model"]
    # A wrong key is one line, exit 2.
    assert (
        main(
            [
                "generate",
                *common,
                "--backend",
                "http",
                "--endpoint",
                app["url"],
                "--api-key",
                "bad",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_load_64_concurrent_requests_batched_vs_sequential(app, tmp_path, tiny_model_dir, capsys) -> None:
    """`drdo-ray bench serve`: 64 concurrent requests all succeed in both modes, and
    @serve.batch beats one request at a time in the same run (the flags as they were before
    the load table: one backend, one concurrency)."""
    out = tmp_path / "bench"
    argv = [
        "bench",
        "serve",
        "--model",
        str(tiny_model_dir),
        "--port",
        str(app["port"]),
        "--backend",
        "transformers",
        "--modes",
        "batched,sequential",
        "--requests",
        "64",
        "--concurrency",
        "64",
        "--max-tokens",
        "16",
        "--max-batch-size",
        "16",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "bench_serve.json").read_text())
    cells = {c["mode"]: c for c in report["cells"]}
    assert [(c["engine"], c["concurrency"]) for c in report["cells"]] == [("transformers", 64)] * 2
    for mode in ("batched", "sequential"):
        assert cells[mode]["succeeded"] == 64 and cells[mode]["failed"] == 0, cells[mode]["failures"]
        assert cells[mode]["latency_p50_s"] <= cells[mode]["latency_p99_s"]
    assert cells["sequential"]["mean_batch_size"] == 1.0
    assert cells["batched"]["mean_batch_size"] > 2
    speedup = report["batching_speedup"]["transformers"]["64"]
    assert speedup > 1.5
    assert cells["sequential"]["vs_baseline"]["requests_per_s"] == round(
        cells["sequential"]["requests_per_s"] / cells["batched"]["requests_per_s"], 2
    )
    with capsys.disabled():
        print(
            "\nbench serve:",
            json.dumps(
                {
                    m: {
                        k: cells[m][k]
                        for k in ("requests_per_s", "latency_p50_s", "latency_p99_s", "mean_batch_size")
                    }
                    for m in ("batched", "sequential")
                }
            ),
            "speed-up",
            speedup,
        )
    # The module's app still answers after the bench app came and went.
    assert httpx.get(f"{app['url']}/health").status_code == 200


def test_start_reports_the_port_that_listens(app, tiny_model_dir) -> None:
    """Serve already runs (the module's app): another port is refused, naming the one that
    listens; port 0 deploys beside it and reports that port, where the new app answers."""
    from drdo_ray.serve.app import free_port, start
    from drdo_ray.serve.startup import health_app_name, stop_apps

    cfg = ServeConfig(
        model=str(tiny_model_dir), backend="transformers", app_name="second", route_prefix="/second"
    )
    with pytest.raises(UserError, match=f"HTTP proxy on 127.0.0.1:{app['port']}"):
        start(cfg.model_copy(update={"port": free_port()}))
    try:
        url = start(cfg.model_copy(update={"port": 0}))
        assert url == f"http://127.0.0.1:{app['port']}/second"
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    finally:
        stop_apps("second", health_app_name("second"))


ROOT = Path(__file__).resolve().parents[1]


def test_serve_yaml_builds_the_app(tiny_model_dir) -> None:
    """serve.yaml validates as a Serve config, and its import path + args build the app."""
    import importlib

    import yaml
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve.yaml").read_text()))
    (spec,) = config.applications
    module, attr = spec.import_path.split(":")
    builder = getattr(importlib.import_module(module), attr)
    app = builder({**spec.args, "model": str(tiny_model_dir)})
    assert isinstance(app, Application)
    # The HTTP front, bound to the engine deployment, which holds the batching and autoscaling.
    front = app._bound_deployment
    assert front.name == "OpenAIIngress" and front.ray_actor_options["num_cpus"] == 0
    engine = front.init_args[0]._bound_deployment
    assert engine.name == "OpenAIServer"
    options = engine._deployment_config
    assert options.autoscaling_config.max_replicas == spec.args["max_replicas"]
    assert options.user_config == {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}
    assert options.max_ongoing_requests == 64


@pytest.mark.parametrize("script", ["serve.py", "generate.py"])
def test_job_entry_points(script) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, f"jobs/{script}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "--model" in result.stdout


def test_serve_cli_guards(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", "--model", str(tmp_path / "missing"), "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "without an API key" in err and "does not exist" in err.splitlines()[-1]
    assert main(["serve", "--model", str(tmp_path), "--detach"]) == 2
    assert "--detach needs a running cluster" in capsys.readouterr().err
    (tmp_path / "not-a-model").mkdir()
    assert main(["serve", "--model", str(tmp_path / "not-a-model"), "--port", "0"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["serve", "--model", "m", "--set", "min_replicas=3", "--set", "max_replicas=2"]) == 2
