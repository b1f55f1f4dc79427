"""The slice of the OpenAI API the server speaks: request models (pydantic), response and
stream-chunk builders, and OpenAI-style errors ``{"error": {message, type, param, code}}``.
Pure Python: no Ray, no torch."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class APIError(Exception):
    """An error answered to the client as OpenAI-style JSON with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_body(status: int, message: str, **kwargs: Any) -> dict[str, Any]:
    return APIError(status, message, **kwargs).body()


def check_served_model(asked: str, served: str) -> None:
    """A request names the served model, or gets OpenAI's 404."""
    if asked != served:
        raise APIError(
            404,
            f"model {asked!r} does not exist; this server serves {served!r}",
            param="model",
            code="model_not_found",
        )


class _Request(BaseModel):
    # Unknown fields are ignored (clients send e.g. `user`); the ones we cannot honour and
    # that would change the answer are refused below rather than silently dropped.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM extension: fixed-length generations (load tests)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    logit_bias: dict[str, float] | None = None

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any, info: Any) -> Any:
        # The OpenAI client sends explicit nulls for omitted-but-set fields in some versions.
        return cls.model_fields[info.field_name].default if value is None else value

    @field_validator("n", mode="before")
    @classmethod
    def _n_default(cls, value: Any) -> Any:
        return 1 if value is None else value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s] or None

    @model_validator(mode="after")
    def _unsupported(self) -> _Request:
        refused = {
            "presence_penalty": self.presence_penalty != 0.0,
            "frequency_penalty": self.frequency_penalty != 0.0,
            "logprobs": self.logprobs not in (None, False, 0),
            "logit_bias": bool(self.logit_bias),
        }
        for name, bad in refused.items():
            if bad:
                raise ValueError(f"{name} is not supported by this server")
        return self

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_checks(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo is not supported by this server")
        if self.suffix:
            raise ValueError("suffix is not supported by this server")
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported by this server (use n)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts (text or token ids)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            return []
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _text_parts(self) -> ChatMessage:
        self.text()  # parts other than text are a 400 when the request is read, not later
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts ({type: text, text: ...}) are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _chat_checks(self) -> ChatCompletionRequest:
        if self.tools:
            raise ValueError("tools are not supported by this server")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError("response_format other than text is not supported by this server")
        if self.max_tokens is None:
            self.max_tokens = self.max_completion_tokens  # the newer name for the same limit
        return self

    def chat(self) -> list[dict[str, str]]:
        # "developer" is the newer name of "system"; templates know only the latter.
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


def parse_request(cls: type[_Request], raw: bytes) -> Any:
    """Parse and validate a JSON body; every failure is a 400 APIError naming the field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"request body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:  # JSON's \\uD800-\\uDFFF escapes decode to lone surrogates, which no tokenizer takes
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        bad = err.object[err.start : err.end].encode("unicode_escape").decode()
        raise APIError(
            400, f"request body holds {bad}, a lone UTF-16 surrogate: not text", code="invalid_json"
        ) from None
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise APIError(
            400, f"{param}: {message}" if param else message, param=param, code="invalid_value"
        ) from None


# ------------------------------------------------------------------------------ responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(name: str, created: int, revision: str | None = None) -> dict[str, Any]:
    card = {"id": name, "object": "model", "created": created, "owned_by": "drdo-ray"}
    return card | ({"revision": revision} if revision is not None else {})


def completion_response(
    rid: str, model: str, choices: list[tuple[str, str]], use: dict[str, int]
) -> dict[str, Any]:
    """choices: (text, finish_reason) in index order."""
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": use,
    }


def chat_response(
    rid: str, model: str, choices: list[tuple[str, str]], use: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": use,
    }


def stream_chunk(
    kind: str, rid: str, model: str, index: int, text: str | None, finish: str | None, *, first: bool = False
) -> dict[str, Any]:
    """One SSE chunk: a text delta (and/or a finish reason) of one choice."""
    if kind == "chat":
        delta: dict[str, Any] = (
            {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
        )
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(kind: str, rid: str, model: str, use: dict[str, int]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
