"""The HTTP front of the OpenAI-compatible app: a light FastAPI deployment (no model, no CPU
reserved) that checks the key and the body's size, answers /v1/models itself, and hands every
completion request, raw, to the engine deployment (app.py: ``OpenAIServer``) through a Serve
handle. It outlives the engine's replicas: a replica that dies while answering, or none being up
to take a request, is OpenAI's error object with a 503 here, where Serve's proxy would answer a
plain-text 500.

The engine answers each request as a stream of items: first ``("json", body)``,
``("error", status, body)`` or ``("stream",)``, then, for a stream, its server-sent-event
chunks."""

# No `from __future__ import annotations` here: FastAPI reads the route methods' annotations
# (`request: Request`) at runtime, through Serve's ingress wrapper.
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import API_KEY_ENV, ServeConfig
from .openai_schema import APIError, check_served_model, error_body, model_card, sse

logger = logging.getLogger("ray.serve")
# The engine replica is gone (killed, its node lost) or none can take the request yet.
ENGINE_GONE = (RayActorError, DeploymentUnavailableError, RequestCancelledError)

# No /docs or /openapi.json: every route but /health sits behind the key.
api = FastAPI(title="drdo-ray OpenAI-compatible server", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(APIError)
async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(error_body(exc.status_code, str(exc.detail), code=code), status_code=exc.status_code)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body(400, str(exc.errors()[:1]), code="invalid_value"), status_code=400)


@api.exception_handler(Exception)
async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("request failed")
    return JSONResponse(
        error_body(500, f"internal error: {type(exc).__name__}", type="internal_error"), status_code=500
    )


def engine_error(err: BaseException) -> APIError:
    """What a failed call to the engine deployment means to the client."""
    if isinstance(err, BackPressureError):
        return APIError(503, "the server is at capacity; retry later", type="server_error", code="overloaded")
    if isinstance(err, ENGINE_GONE):
        return APIError(
            503,
            "the model's replica stopped while answering or is being replaced; retry",
            type="server_error",
            code="replica_unavailable",
        )
    cause = err.cause if isinstance(err, RayTaskError) and err.cause is not None else err
    return APIError(500, f"internal error: {type(cause).__name__}", type="internal_error")


@serve.deployment(ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=10)
@serve.ingress(api)
class OpenAIIngress:
    """The routes; ``engine`` is the handle of the engine deployment."""

    def __init__(self, engine: Any, settings: dict[str, Any], api_key: str | None = None) -> None:
        self.cfg = ServeConfig.model_validate(settings)
        self.engine = engine
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self.name = self.cfg.served_model_name
        self.created = int(time.time())

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"object": "list", "data": [model_card(self.name, self.created, self.cfg.revision)]}

    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str, request: Request) -> dict[str, Any]:
        self._authorize(request)
        check_served_model(model_id, self.name)
        return model_card(self.name, self.created, self.cfg.revision)

    async def revisions(self) -> tuple[str | None, str | None]:
        """(this front's revision, an engine replica's): a rollout waits until both are new."""
        return self.cfg.revision, await self.engine.revision.remote()

    @api.get("/stats")
    async def replica_stats(self, request: Request) -> dict[str, Any]:
        """One engine replica's counters."""
        self._authorize(request)
        try:
            return await self.engine.counters.remote()
        except Exception as err:  # mapped to the client's error, as for a completion
            raise engine_error(err) from None

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        return await self._forward(request, "completion")

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        return await self._forward(request, "chat")

    # ------------------------------------------------------------------------ checks

    def _authorize(self, request: Request) -> None:
        if not self.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    async def _body(self, request: Request) -> bytes:
        limit = self.cfg.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
        raw = await request.body()
        if len(raw) > limit:
            raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
        return raw

    # ------------------------------------------------------------------------ forwarding

    async def _forward(self, request: Request, kind: str) -> Any:
        self._authorize(request)
        raw = await self._body(request)
        replies = self.engine.options(stream=True).handle.remote(kind, raw)
        try:
            first = await replies.__anext__()
        except StopAsyncIteration:
            raise APIError(500, "internal error: no answer from the engine", type="internal_error") from None
        except Exception as err:  # the engine's replica failed or is gone: an OpenAI error, never a bare 500
            raise engine_error(err) from None
        if first[0] == "error":
            return JSONResponse(first[2], status_code=first[1])
        if first[0] == "json":
            return first[1]
        return StreamingResponse(
            self._relay(replies), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _relay(self, replies: Any) -> AsyncIterator[bytes]:
        """A stream's chunks; a failure midway is one last error chunk. A client that leaves
        cancels the engine's generation with it."""
        done = False
        try:
            async for chunk in replies:
                yield chunk
            done = True
        except Exception as err:
            logger.warning("stream failed: %r", err)
            yield sse(engine_error(err).body())
            done = True
        finally:
            if not done:
                replies.cancel()
