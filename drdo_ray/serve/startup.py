"""Starting the OpenAI app without ever hanging: what each replica asks of the cluster, a
``/health`` that answers at once whatever the replicas are doing, and a bounded wait for the
first replica.

``/health`` is its own tiny Serve application (``APP-health``, one replica, no CPU reserved,
so it schedules on any node) mounted at ``PREFIX/health``: Serve's proxy sends a path to the
longest matching route prefix, so ``/health`` reaches it and never queues behind an engine
replica that is loading, unschedulable or dead. It reads the engine app's state from the
Serve controller (with a short timeout) and answers:

    200 {"status": "ok"}                                  a replica is ready
    503 {"status": "starting", "reason": ...}             replicas are being placed or loading
    503 {"status": "unschedulable", "reason": ...}        no node can hold a replica (yet)
    503 {"status": "failed", "reason": ...}               the replicas failed to start
    503 {"status": "absent" | "unknown", "reason": ...}   no such app / the controller is silent"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from ray import serve
from rich.console import Console
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..cluster_resources import cluster_totals, shortfall
from ..errors import UserError

STATUS_TIMEOUT_S = 2.0  # a /health answer never waits longer on the Serve controller
POLL_S = 0.5


def health_app_name(app_name: str) -> str:
    return f"{app_name}-health"


def health_route(route_prefix: str) -> str:
    return route_prefix.rstrip("/") + "/health"


def health_state(
    status: str | None, running: int, message: str, unschedulable: str | None = None
) -> tuple[int, dict[str, str]]:
    """(HTTP code, body) of ``/health`` for the engine app's Serve ``status`` (None: no such
    app), its RUNNING replicas, Serve's status ``message`` and, when the cluster cannot hold a
    replica now, why (``unschedulable``)."""
    if status is None:
        return 503, {"status": "absent", "reason": "the model's application is not deployed"}
    # RUNNING with no replica: scaled to zero (min_replicas 0); the next request starts one.
    if running > 0 or status == "RUNNING":
        return 200, {"status": "ok"}
    if status in ("DEPLOY_FAILED", "UNHEALTHY"):
        return 503, {"status": "failed", "reason": message or f"the application is {status}"}
    if status == "DELETING":
        return 503, {"status": "absent", "reason": "the model's application is being deleted"}
    if unschedulable:
        return 503, {"status": "unschedulable", "reason": unschedulable}
    return 503, {"status": "starting", "reason": message or "no replica is ready yet"}


def _app_state(app_name: str) -> tuple[str | None, int, str]:
    """(status, RUNNING replicas, message) of one Serve app, from the controller."""
    app = serve.status().applications.get(app_name)
    if app is None:
        return None, 0, ""
    # Ready when every deployment of the app (the HTTP front and the engine) has a replica.
    running = min((int(d.replica_states.get("RUNNING", 0)) for d in app.deployments.values()), default=0)
    # First lines only: a failed constructor's message carries its whole traceback.
    messages = [app.message] + [d.message for d in app.deployments.values()]
    return app.status.value, running, " ".join(m.strip().splitlines()[0] for m in messages if m.strip())


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=1,
    max_surge_percent=100,  # redeployed with a new revision: the old one answers until the new runs
)
class HealthCheck:
    """``/health`` of the engine app ``app_name``, whose replicas each ask for ``per_replica``
    (``replicas`` of them at start), on a cluster that ``can_grow`` (then replicas no node can
    hold yet are "starting": the autoscaler adds one) or not ("unschedulable")."""

    def __init__(
        self,
        app_name: str,
        per_replica: dict[str, float],
        replicas: int,
        can_grow: bool,
        revision: str | None = None,
    ) -> None:
        self.app_name = app_name
        self.per_replica = per_replica
        self.replicas = replicas
        self.can_grow = can_grow
        self.revision = revision  # the label of what the app was last deployed with (round-<k>)
        # Connect to the Serve controller now, not on the first /health request.
        with contextlib.suppress(Exception):
            _app_state(app_name)

    def _state(self) -> tuple[int, dict[str, str]]:
        status, running, message = _app_state(self.app_name)
        unschedulable = None
        if status is not None and status != "RUNNING" and running == 0:
            totals, nodes = cluster_totals()
            unschedulable = shortfall(self.per_replica, self.replicas, totals, nodes, what="each replica")
            if unschedulable and self.can_grow:
                message, unschedulable = f"waiting for the cluster to add a node: {unschedulable}", None
        return health_state(status, running, message, unschedulable)

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            code, body = await asyncio.wait_for(asyncio.to_thread(self._state), STATUS_TIMEOUT_S)
        except asyncio.TimeoutError:
            code, body = 503, {"status": "unknown", "reason": "the Serve controller did not answer in time"}
        if self.revision is not None:
            body["revision"] = self.revision
        return JSONResponse(body, status_code=code)


def health_target(
    app_name: str,
    route_prefix: str,
    per_replica: Mapping[str, float],
    replicas: int,
    can_grow: bool,
    revision: str | None = None,
) -> Any:
    """The ``/health`` application for ``serve.run_many``; ``revision`` labels what is live."""
    return serve.RunTarget(
        target=HealthCheck.bind(app_name, dict(per_replica), replicas, can_grow, revision),
        name=health_app_name(app_name),
        route_prefix=health_route(route_prefix),
    )


def wait_until_ready(
    app_names: list[str], timeout_s: float, console: Console, *, waiting_for: str | None = None
) -> None:
    """Return once each app has a ready replica; UserError when one fails to start or
    ``timeout_s`` passes first (``waiting_for``: the known reason replicas may not schedule)."""
    deadline = time.monotonic() + timeout_s
    shown = ""
    while True:
        waiting = []
        for name in app_names:
            status, running, message = _app_state(name)
            code, body = health_state(status, running, message)
            if body["status"] in ("failed", "absent"):
                raise UserError(f"the app did not start: {body['reason']}")
            if code != 200:
                waiting.append(message)
        if not waiting:
            return
        message = " ".join(m for m in waiting if m)
        if time.monotonic() >= deadline:
            reason = waiting_for or message or "its replicas were still starting"
            raise UserError(
                f"no replica became ready within {timeout_s:g}s (--startup-timeout): {reason}; "
                "the app was stopped"
            )
        if message and message != shown:
            console.print(f"[dim]waiting: {message}[/]")
            shown = message
        time.sleep(POLL_S)


def stop_apps(*names: str) -> None:
    """Delete what this command deployed (a failed start leaves nothing behind)."""
    for name in names:
        # Already gone, or Serve itself is down: nothing left to stop.
        with contextlib.suppress(Exception):
            serve.delete(name)
