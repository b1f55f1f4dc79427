"""Property-based fuzzing of the OpenAI-compatible app over real HTTP, with hypothesis and
schemathesis: the app publishes no OpenAPI document (its routes read the raw request), so the
test writes one from the request models' own JSON schemas, and schemathesis draws requests from
it, valid ones and ones that break it (wrong types, missing fields, bodies that are not JSON).
The test then breaks them further the ways clients do (unknown fields, random JSON, unicode and
control characters, lone surrogates, invalid UTF-8, negative and huge numbers, NaN and
infinities, long stop lists, prompts past the model's context, a 10 MB body). The property, for /v1/completions,
/v1/chat/completions and /v1/models: never a 5xx, never a hang; every error is OpenAI's error
object with a message naming what was wrong; and after a rejection the server answers the next
request. Failures are collected (one example per distinct kind) and reported together.

DRDO_RAY_FUZZ_EXAMPLES=N draws N requests per route (default 60, the same ones every run) from a
random seed instead."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

try:  # the openai client's HTTP library (httpx2 in this environment, httpx elsewhere)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from drdo_ray.config import ServeConfig
from drdo_ray.serve.openai_schema import ChatCompletionRequest, CompletionRequest

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("DRDO_RAY_FUZZ_EXAMPLES", "60"))
# The suite draws the same requests every run; a deeper search (more examples) draws new ones.
DERANDOMIZE = "DRDO_RAY_FUZZ_EXAMPLES" not in os.environ
MAX_PROMPT_TOKENS = 100
REQUEST_BYTES = 1 << 20

# Every code point, control characters and lone surrogates included (and, as those are rare
# among all code points, texts made of them alone).
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.text(st.characters(categories=("Cc", "Cs", "Cf", "Zl", "Zp")), min_size=1, max_size=10),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 2**31, 2**63, 2**64, 10**30, -(10**30), 1e308, -0.0, 0.5, 3]),
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
# What a header may carry (HTTP forbids control characters there; the client refuses them).
HEADER_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
SAMPLING_FIELDS = ("max_tokens", "n", "temperature", "top_p", "seed", "max_completion_tokens")


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
            max_tokens_cap=8,
            default_max_tokens=4,
            max_prompt_tokens=MAX_PROMPT_TOKENS,
            max_n=3,
            max_request_bytes=REQUEST_BYTES,
        )
    )
    client = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {KEY}"})
    yield {"url": url, "model": Path(tiny_model_dir).name, "client": client}
    client.close()
    serve.shutdown()


class Findings:
    """Distinct property violations (one example each) and the number of requests sent."""

    def __init__(self) -> None:
        self.cases = 0
        self.kinds: dict[str, str] = {}
        self.statuses: Counter[int] = Counter()

    def add(self, route: str, problem: str, example: str) -> None:
        kind = f"{route} {re.sub(r'[0-9]+', 'N', problem)}"[:200]
        self.kinds.setdefault(kind, example[:500])


def _problem(response: Any) -> str | None:
    """Why ``response`` breaks the property, or None."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:120]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} without a JSON body: {response.text[:80]}"
        error = body.get("error") if isinstance(body, dict) else None
        if set(body) != {"error"} or not isinstance(error, dict):
            return f"{response.status_code} not OpenAI's error object: {response.text[:80]}"
        if set(error) != {"message", "type", "param", "code"} or not error["message"]:
            return f"{response.status_code} error object without its fields or message: {error}"
        return None
    if "text/event-stream" in response.headers.get("content-type", ""):
        for line in response.text.splitlines():
            if line.startswith("data: {") and '"error"' in line:
                return f"stream error chunk: {line[:120]}"
        if "data: [DONE]" not in response.text:
            return "stream without [DONE]"
        return None
    body = response.json()
    if not body.get("choices") and body.get("object") != "list" and body.get("object") != "model":
        return f"200 without choices: {response.text[:80]}"
    return None


def _check(
    app: dict[str, Any], findings: Findings, route: str, send: Callable[[], Any], example: str
) -> None:
    findings.cases += 1
    try:
        response = send()
    except httpx.TimeoutException:
        findings.add(route, "hang (no answer in 120 s)", example)
        return
    except httpx.HTTPError as err:
        findings.add(route, f"transport error {type(err).__name__}: {err}", example)
        return
    findings.statuses[response.status_code] += 1
    problem = _problem(response)
    if problem:
        findings.add(route, problem, example)
    if response.status_code >= 400:
        # A rejection leaves the server serving: the next request is answered.
        after = app["client"].get("/v1/models")
        if after.status_code != 200:
            findings.add(route, f"server stopped answering after {response.status_code}", example)


def _encode(body: Any, ascii_only: bool) -> bytes:
    """JSON text; with lone surrogates either escaped (valid JSON) or raw (invalid UTF-8)."""
    return json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def openapi_document() -> dict[str, Any]:
    """An OpenAPI 3.1 document of the routes under test, from the request models."""
    components: dict[str, Any] = {}

    def body(cls: type) -> dict[str, Any]:
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[cls.__name__] = schema
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{cls.__name__}"}}}
        return {"post": {"requestBody": {"required": True, "content": content}, "responses": OK}}

    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v1/completions": body(CompletionRequest),
        "/v1/chat/completions": body(ChatCompletionRequest),
        "/v1/models": {"get": {"responses": OK}},
        "/v1/models/{model_id}": {"get": {"parameters": [model_id], "responses": OK}},
    }
    info = {"title": "drdo-ray OpenAI-compatible server", "version": "1"}
    return {"openapi": "3.1.0", "info": info, "paths": paths, "components": {"schemas": components}}


OK = {"200": {"description": "OK"}}
SCHEMA = schemathesis.openapi.from_dict(openapi_document())


def _requests(route: str) -> st.SearchStrategy[Any]:
    """Bodies schemathesis draws for ``route``: valid ones and ones that break its schema."""
    operation = SCHEMA[route]["POST"]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return st.one_of(*(operation.as_strategy(generation_mode=m) for m in modes)).map(lambda case: case.body)


# Fields the server refuses whatever their value ("not supported by this server").
REFUSED = ("presence_penalty", "frequency_penalty", "logprobs", "logit_bias", "echo", "suffix", "best_of")
REFUSED_CHAT = ("tools", "response_format")
FLAWS = ("none", "numbers", "wrong_type", "missing", "unknown", "unicode", "stop", "long_prompt", "as_drawn")


@st.composite
def _broken(draw: Any, route: str, served: str) -> Any:
    """A request for ``route`` from schemathesis, with one flaw of the ways clients get it wrong
    (``none``: kept as valid as the drawn values allow)."""
    body = draw(_requests(route))
    flaw = draw(st.sampled_from(FLAWS))
    if not isinstance(body, dict) or flaw == "as_drawn":  # not a JSON object (bytes, a list...)
        return body
    chat = route.endswith("chat/completions")
    fields = list((ChatCompletionRequest if chat else CompletionRequest).model_fields)
    body["model"] = served
    for key in REFUSED + REFUSED_CHAT:
        body.pop(key, None)
    if flaw == "none":  # within the server's limits where the drawn values were not
        body.update(n=1, max_tokens=4, stop=None)
        if draw(st.booleans()):  # and a prompt that surely reaches the engine
            key, value = ("messages", [{"role": "user", "content": "Hi"}]) if chat else ("prompt", "Hi")
            body[key] = value
    elif flaw == "numbers":  # negative, huge, NaN, infinite
        for key in draw(st.lists(st.sampled_from(SAMPLING_FIELDS), min_size=1, max_size=3)):
            body[key] = draw(NUMBERS)
    elif flaw == "wrong_type":
        body[draw(st.sampled_from(fields))] = draw(JSON)
    elif flaw == "missing":
        body.pop(draw(st.sampled_from(fields)), None)
    elif flaw == "unknown":
        body.update(draw(st.dictionaries(TEXT, JSON, min_size=1, max_size=3)))
    elif flaw == "unicode":  # any code point: control characters, lone surrogates, astral planes
        text = draw(TEXT)
        if chat:
            body["messages"] = [{"role": draw(st.sampled_from(["user", "system"])), "content": text}]
        else:
            body["prompt"] = draw(st.sampled_from([text, [text, text]]))
    elif flaw == "stop":
        body["stop"] = draw(st.lists(TEXT, min_size=0, max_size=200))
    elif flaw == "long_prompt":  # past the model's context, as text or token ids
        long = draw(st.integers(MAX_PROMPT_TOKENS, 80 * MAX_PROMPT_TOKENS))
        text = "word " * long
        if chat:
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = draw(st.sampled_from([text, [7] * long, [[7] * long]]))
    return body


def _fuzz_route(app: dict[str, Any], findings: Findings, route: str) -> None:
    client = app["client"]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        body=_broken(route, app["model"]),
        ascii_only=st.booleans(),
        wrong_key=st.integers(0, 9).map(lambda x: x == 5),
    )
    def fuzz(body: Any, ascii_only: bool, wrong_key: bool) -> None:
        raw = bytes(body) if isinstance(body, (bytes, bytearray)) else _encode(body, ascii_only)
        headers = {"Content-Type": "application/json"}
        if wrong_key:  # now and then: a 401, in the same shape
            headers["Authorization"] = "Bearer wrong"
        _check(app, findings, route, lambda: client.post(route, content=raw, headers=headers), repr(body))

    @settings(max_examples=max(10, EXAMPLES // 3), deadline=None, database=None, derandomize=DERANDOMIZE)
    @given(raw=st.one_of(JSON.map(lambda v: _encode(v, True)), st.binary(max_size=200)))
    def random_body(raw: bytes) -> None:
        _check(app, findings, route, lambda: client.post(route, content=raw), repr(raw))

    fuzz()
    random_body()
    # A 10 MB body: refused by its size, not read into a crash.
    big = json.dumps({"model": app["model"], "prompt": "x" * (10 << 20)}).encode()
    _check(app, findings, route, lambda: client.post(route, content=big), "10 MB body")


def test_completions_and_chat_answer_every_request_within_the_property(app) -> None:
    findings = Findings()
    _fuzz_route(app, findings, "/v1/completions")
    _fuzz_route(app, findings, "/v1/chat/completions")
    print(
        f"fuzz: {findings.cases} requests {dict(findings.statuses)}, {len(findings.kinds)} distinct failures"
    )
    assert not findings.kinds, json.dumps(findings.kinds, indent=1, ensure_ascii=True)


def test_models_route_answers_every_request_within_the_property(app) -> None:
    findings = Findings()
    client = app["client"]

    drawn = (
        SCHEMA["/v1/models/{model_id}"]["GET"]
        .as_strategy()
        .map(lambda case: case.path_parameters["model_id"])
    )

    @settings(max_examples=max(10, EXAMPLES // 2), deadline=None, database=None, derandomize=DERANDOMIZE)
    @given(
        model_id=st.one_of(st.just(app["model"]), TEXT, drawn),
        auth=st.one_of(st.just(KEY), HEADER_TEXT, st.none()),
    )
    def fuzz(model_id: str, auth: str | None) -> None:
        headers = {} if auth is None else {"Authorization": f"Bearer {auth}".strip().encode()}
        path = "/v1/models/" + quote(model_id.encode("utf-8", "surrogatepass"), safe="")
        for target in ("/v1/models", path):
            _check(
                app,
                findings,
                "/v1/models",
                lambda t=target: client.get(t, headers=headers),
                f"{path} {auth!r}",
            )

    fuzz()
    print(
        f"fuzz: {findings.cases} requests {dict(findings.statuses)}, {len(findings.kinds)} distinct failures"
    )
    assert not findings.kinds, json.dumps(findings.kinds, indent=1, ensure_ascii=True)
