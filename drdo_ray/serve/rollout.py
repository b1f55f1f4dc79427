"""Moving a running OpenAI app to a new model without dropping a request (the online rounds'
serve step; docs/online.md).

The app is deployed again with the new model and its ``revision``. Its deployments (the HTTP
front, the engine, and ``/health``'s) allow a surge (``max_surge_percent``,
drdo_ray/serve/app.py and startup.py), so Serve starts each replacement
before it stops an old replica, and an old replica finishes its requests before it goes (graceful
shutdown): requests, and ``/health``, are answered throughout. The rollout returns once every
replica serves the new revision. When the app is not running yet, it is started
(:func:`drdo_ray.serve.app.start`)."""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from rich.console import Console

from .. import storage
from ..cluster_resources import can_autoscale
from ..config import RolloutConfig
from ..errors import UserError
from .app import build_app, replica_resources, start
from .startup import POLL_S, health_target

ROLLOUT_FILE = "serve.json"


def _app(app_name: str) -> Any | None:
    """The app's status overview, or None when Serve or the app is not running."""
    try:
        return serve.status().applications.get(app_name)
    except Exception:  # no Serve instance on this cluster
        return None


def _settled(app_name: str) -> bool:
    """RUNNING, with no replica starting or stopping."""
    app = _app(app_name)
    if app is None or app.status.value != "RUNNING":
        return False
    return {s for d in app.deployments.values() for s, n in d.replica_states.items() if n} <= {"RUNNING"}


def _serves(app_name: str, revision: str | None, probes: int = 3) -> bool:
    """The app's front and engine replicas answer with ``revision`` (a few probes through the
    front's handle, each asking an engine replica in turn)."""
    handle = serve.get_app_handle(app_name)
    try:
        return all(
            handle.revisions.remote().result(timeout_s=10) == (revision, revision) for _ in range(probes)
        )
    except Exception:  # a replica between versions: ask again
        return False


def update(cfg: RolloutConfig, console: Console) -> None:
    """Redeploy the running app ``cfg.app_name`` with ``cfg.model``; return once it serves it."""
    console.print(f"[bold]serve[/] rolling {cfg.app_name} out to {cfg.revision} ({cfg.model})")
    replicas = max(1, cfg.min_replicas)
    health = health_target(
        cfg.app_name, cfg.route_prefix, replica_resources(cfg), replicas, can_autoscale(), cfg.revision
    )
    engine = serve.RunTarget(target=build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix)
    serve.run_many([health, engine], wait_for_applications_running=False)
    deadline = time.monotonic() + cfg.startup_timeout
    while not (_settled(cfg.app_name) and _serves(cfg.app_name, cfg.revision)):
        if time.monotonic() > deadline:
            app = _app(cfg.app_name)
            raise UserError(
                f"the rollout to {cfg.revision} did not finish within {cfg.startup_timeout:g}s "
                f"(--startup-timeout); the old replicas keep serving: {app.message if app else 'the app is gone'}"
            )
        time.sleep(POLL_S)


def roll_out(cfg: RolloutConfig, console: Console | None = None) -> dict[str, Any]:
    """Start the app on ``cfg.model``, or roll the running one out to it; writes OUT/serve.json."""
    from ..ray_runtime import ensure_ray

    console = console or Console(stderr=True)
    ensure_ray()
    started = time.perf_counter()
    record: dict[str, Any] = {"app_name": cfg.app_name, "model": cfg.model, "revision": cfg.revision}
    if _app(cfg.app_name) is not None:
        update(cfg, console)
        record["mode"] = "rolled out"
    else:
        record |= {"mode": "started", "url": start(cfg, console)}
    record["elapsed_s"] = round(time.perf_counter() - started, 3)
    storage.makedirs(cfg.out)
    storage.write_json(storage.join(cfg.out, ROLLOUT_FILE), record)
    console.print(f"[bold]serve[/] {cfg.app_name} serves {cfg.revision} ({record['mode']})")
    return record
