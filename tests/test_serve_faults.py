"""A killed replica under load: 64 clients send completions without pause while the app's one
engine replica is killed (``ray.kill``, as a lost process or node would end it). Every request
gets an answer within its timeout: a completion, or a 503 with OpenAI's error object from the
HTTP front (ingress.py), never a hang or a bare 500. Serve starts a new replica, /health returns
to 200 and the clients' requests succeed again. The test prints how many failed, and for how long."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

try:  # the openai client's HTTP library (httpx2 in this environment, httpx elsewhere)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from drdo_ray.config import ServeConfig

KEY = "fault-key"
APP = "drdo-faults"
CLIENTS = 64
TIMEOUT_S = 60


def _engine_replicas() -> list[dict[str, str]]:
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True) if f"{APP}#OpenAIServer#" in a["name"]]


async def _load(url: str, model: str, seconds: float, kill_after: float) -> dict[str, Any]:
    """CLIENTS clients in a loop for ``seconds``; the engine replica is killed at ``kill_after``."""
    import ray

    results: list[tuple[float, float, int, Any]] = []
    health: list[tuple[float, int]] = []
    began = time.monotonic()
    stop = began + seconds
    body = {"model": model, "prompt": "the quick brown fox", "max_tokens": 8, "ignore_eos": True}

    async def client(c: Any) -> None:
        while time.monotonic() < stop:
            sent = time.monotonic()
            try:
                r = await c.post("/v1/completions", json=body, timeout=TIMEOUT_S)
                answer: Any = r.json() if r.status_code != 200 else None
                results.append((sent, time.monotonic(), r.status_code, answer))
            except httpx.HTTPError as err:  # a timeout or a dropped connection: the property broken
                results.append((sent, time.monotonic(), -1, repr(err)))

    async def watch(c: Any) -> None:
        while time.monotonic() < stop:
            r = await c.get("/health", timeout=10)
            health.append((time.monotonic(), r.status_code))
            await asyncio.sleep(0.25)

    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=CLIENTS + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as c:
        tasks = [asyncio.create_task(client(c)) for _ in range(CLIENTS)] + [asyncio.create_task(watch(c))]
        await asyncio.sleep(kill_after)
        (victim,) = _engine_replicas()
        killed = time.monotonic()
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
        await asyncio.gather(*tasks)
    replicas = [a["name"] for a in _engine_replicas()]
    return {"results": results, "health": health, "killed": killed, "victim": victim["name"], "now": replicas}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_replica_under_64_clients_answers_every_request(ray_session, tiny_model_dir) -> None:
    from ray import serve

    from drdo_ray.serve.app import start
    from drdo_ray.serve.startup import health_app_name, stop_apps

    cfg = ServeConfig(model=str(tiny_model_dir), port=0, api_key=KEY, backend="transformers", app_name=APP)
    url = start(cfg)
    try:
        run = asyncio.run(_load(url, tiny_model_dir.name, seconds=30, kill_after=6))
    finally:
        stop_apps(APP, health_app_name(APP))
        serve.shutdown()
    results, killed = run["results"], run["killed"]
    statuses = Counter(status for _, _, status, _ in results)
    failed = [r for r in results if r[2] != 200]
    # An answer for every request: completions, or 503s in OpenAI's shape, nothing else.
    assert set(statuses) <= {200, 503}, statuses
    for _, _, _, body in failed:
        assert set(body) == {"error"} and body["error"]["code"] == "replica_unavailable", body
        assert body["error"]["message"] and body["error"]["type"] == "server_error"
    assert max(done - sent for sent, done, _, _ in results) < TIMEOUT_S
    # Only the requests of the moment of the kill failed; the clients succeed again after it.
    assert failed and all(done >= killed for _, done, _, _ in failed)
    failing_s = max(done for _, done, _, _ in failed) - killed
    assert failing_s < 10, failing_s
    recovered = [done for sent, done, status, _ in results if status == 200 and sent > killed]
    assert recovered, "no request succeeded after the kill"
    # Serve replaced the replica, and /health is 200 again.
    assert len(run["now"]) == 1 and run["now"] != [run["victim"]], run["now"]
    assert run["health"][-1][1] == 200, run["health"][-5:]
    down = [t for t, status in run["health"] if t > killed and status != 200]
    back = [t for t, status in run["health"] if t > max(down, default=killed) and status == 200]
    print(
        f"killed replica under {CLIENTS} clients: {len(results)} requests, {len(failed)} failed "
        f"(503, within {failing_s:.1f} s of the kill), first success after it "
        f"{min(recovered) - killed:.1f} s, /health 200 again after {min(back) - killed:.1f} s, "
        f"slowest answer {max(done - sent for sent, done, _, _ in results):.1f} s"
    )
