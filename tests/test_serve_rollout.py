"""The serving tier follows the rounds: a running Serve app moves to the next round's policy
(drdo_ray/serve/rollout.py, the online rounds' serve step) while clients keep sending requests,
and not one of them fails, /health included (Serve's default rollout stops the old replica before
the new one runs: /health answers 503 meanwhile); /health and /v1/models say which round is live."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

try:  # the openai client's HTTP library (httpx2 in this environment, httpx elsewhere)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from drdo_ray.config import RolloutConfig

KEY = "rollout-key"
CLIENTS = 3


class Clients:
    """Threads that post completions and read /v1/models and /health until stopped, counting
    outcomes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.revisions: list[str | None] = []  # what /v1/models said, in order
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(CLIENTS)]

    def _loop(self) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(
                        f"{self.url}/v1/completions",
                        headers=headers,
                        json={"model": "policy", "prompt": "TL;DR:", "max_tokens": 6, "temperature": 0.8},
                    )
                    models = http.get(f"{self.url}/v1/models", headers=headers)
                    health = http.get(f"{self.url}/health")  # a load balancer's probe: never 503
                except Exception as err:  # a refused or dropped connection is a failed request
                    with self.lock:
                        self.failures.append(f"{type(err).__name__}: {err}")
                    continue
                with self.lock:
                    for response in (r, models, health):
                        if response.status_code != 200:
                            self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    if r.status_code == 200 and r.json()["choices"][0]["text"] is not None:
                        self.ok += 1
                    if models.status_code == 200:
                        self.revisions.append(models.json()["data"][0].get("revision"))

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)


@pytest.mark.slow
def test_a_running_app_moves_to_the_next_rounds_policy_without_a_failed_request(
    ray_session, tiny_model_dir, tmp_path
):
    from ray import serve

    from drdo_ray.models import build_tiny_model
    from drdo_ray.serve.rollout import roll_out
    from drdo_ray.serve.startup import health_app_name, stop_apps

    next_policy = build_tiny_model(tmp_path / "round-1", seed=1)
    common = {
        "port": 0,
        "api_key": KEY,
        "backend": "transformers",
        "served_model_name": "policy",
        "app_name": "rounds",
        "startup_timeout": 240,
    }
    try:
        first = roll_out(
            RolloutConfig(model=str(tiny_model_dir), revision="round-0", out=str(tmp_path / "s0"), **common)
        )
        assert first["mode"] == "started"
        url = first["url"]
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "revision": "round-0"}
        with Clients(url) as clients:
            while clients.ok < 2 * CLIENTS:  # requests flow before the rollout starts
                time.sleep(0.2)
            second = roll_out(
                RolloutConfig(model=str(next_policy), revision="round-1", out=str(tmp_path / "s1"), **common)
            )
            settled, after = clients.ok, len(clients.revisions)
            while clients.ok < settled + 2 * CLIENTS:  # and after it ends
                time.sleep(0.2)
        assert clients.failures == []
        assert second["mode"] == "rolled out"
        # Round 0 answered first; once the rollout returned (an answer in flight aside), only round 1.
        seen = clients.revisions
        assert seen[0] == "round-0" and set(seen[after + CLIENTS :]) == {"round-1"}
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "revision": "round-1"}
        # The front and the engine: one replica each again, the surge replicas gone.
        running = serve.status().applications["rounds"].deployments
        states = {name: {s: n for s, n in d.replica_states.items() if n} for name, d in running.items()}
        assert states == {
            "OpenAIIngress": {"RUNNING": 1},
            "OpenAIServer": {"RUNNING": 1},
        }
        record = json.loads(Path(tmp_path / "s1" / "serve.json").read_text())
        assert (record["revision"], record["model"]) == ("round-1", str(next_policy))
    finally:
        stop_apps("rounds", health_app_name("rounds"))
        serve.shutdown()
