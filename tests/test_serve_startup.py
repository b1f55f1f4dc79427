"""Commands whose actors the cluster cannot hold fail fast with one line, on the local CPU
cluster (4 CPUs, no GPU): `serve --num-gpus-per-replica 1` exits 2 before deploying; on a
cluster that can autoscale it waits up to --startup-timeout while /health answers 503 at once,
then exits with the same kind of error and leaves nothing deployed; `generate --num-gpus 1`
fails before reading any prompt, at once or, where the cluster can grow, after --startup-timeout
(`score`: tests/test_scoring.py)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

try:  # the openai client's HTTP library (httpx2 in this environment, httpx elsewhere)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from drdo_ray.cli import main
from drdo_ray.cluster_resources import AUTOSCALING_ENV
from drdo_ray.config import ServeConfig
from drdo_ray.errors import UserError

APP = "drdo-startup-test"


def _apps() -> set[str]:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return set(serve.status().applications)
    except RayServeException:  # no Serve instance: nothing deployed
        return set()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err, "no error printed"
    line = err.splitlines()[-1]
    assert line.startswith("drdo-ray: error:"), err
    return line


@pytest.fixture(autouse=True)
def no_autoscaling(monkeypatch):
    """The local cluster cannot grow; each test says otherwise where it needs to."""
    monkeypatch.setenv(AUTOSCALING_ENV, "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_serve_refuses_a_gpu_replica_on_a_cpu_cluster(ray_session, tiny_model_dir, capsys) -> None:
    started = time.monotonic()
    argv = ["serve", "--model", str(tiny_model_dir), "--port", "0", "--app-name", APP]
    assert main([*argv, "--num-gpus-per-replica", "1"]) == 2
    elapsed = time.monotonic() - started
    line = _error_line(capsys)
    assert "each replica needs {CPU: 1, GPU: 1}" in line and "the cluster has {CPU: 4, GPU: 0}" in line
    assert "--num-gpus-per-replica" in line
    assert elapsed < 60, elapsed
    assert APP not in _apps()


def test_proxy_port_is_the_running_proxys_or_refused() -> None:
    from drdo_ray.serve.app import proxy_port

    assert proxy_port("127.0.0.1", 8000, None) is None  # no Serve yet: the caller starts one
    assert proxy_port("127.0.0.1", 0, ("127.0.0.1", 8123)) == 8123
    assert proxy_port("127.0.0.1", 8123, ("127.0.0.1", 8123)) == 8123
    assert proxy_port("localhost", 0, ("0.0.0.0", 8123)) == 8123  # all interfaces include loopback
    with pytest.raises(UserError, match=r"HTTP proxy on 127.0.0.1:8123.*--port 8123"):
        proxy_port("127.0.0.1", 9000, ("127.0.0.1", 8123))
    with pytest.raises(UserError, match=r"--host 127.0.0.1 --port 8123"):
        proxy_port("0.0.0.0", 0, ("127.0.0.1", 8123))  # a loopback proxy cannot serve other hosts


def test_autoscaling_cluster_waits_with_health_503_then_fails(
    ray_session, tiny_model_dir, monkeypatch
) -> None:
    """Told the cluster can grow, serve deploys and waits; /health answers 503 with the reason
    within a second meanwhile; at the timeout both apps are gone and the error names the GPU."""
    from drdo_ray.serve.app import free_port, start

    monkeypatch.setenv(AUTOSCALING_ENV, "1")
    port = free_port()
    cfg = ServeConfig(
        model=str(tiny_model_dir),
        port=port,
        backend="transformers",
        num_gpus_per_replica=1,
        startup_timeout=20,
        app_name=APP,
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["url"] = start(cfg, Console(file=io.StringIO()))
        except Exception as err:  # the test reads it below
            outcome["error"] = err

    thread = threading.Thread(target=run)
    began = time.monotonic()
    thread.start()
    health, answered_in = None, float("inf")
    while health is None and thread.is_alive():
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        except httpx.TransportError:  # the proxy or the /health app is not up yet
            time.sleep(0.5)
            continue
        if health.status_code == 404:  # the proxy is up, the /health route not yet
            health = None
            time.sleep(0.5)
    if health is not None and thread.is_alive():  # once routed, every answer comes at once
        asked = time.monotonic()
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        answered_in = time.monotonic() - asked
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert health is not None, outcome
    assert health.status_code == 503 and answered_in < 3, (health.text, answered_in)
    body = health.json()
    # A cluster that can grow is "starting" while it waits for a node (unschedulable: never).
    assert body["status"] == "starting" and "needs {CPU: 1, GPU: 1}" in body["reason"], body
    assert body["reason"].startswith("waiting for the cluster to add a node"), body
    error = outcome.get("error")
    assert isinstance(error, UserError), outcome
    message = str(error)
    assert "no replica became ready within 20s" in message and "GPU" in message and "stopped" in message
    assert len(message.splitlines()) == 1
    assert time.monotonic() - began < 20 + 30
    assert not {APP, f"{APP}-health"} & _apps()
    from ray import serve

    # Serve's HTTP proxy keeps the port it started with: a later module that asks for another
    # port would be refused (proxy_port).
    serve.shutdown()


def test_generate_refuses_an_impossible_pool_before_reading_prompts(
    ray_session, tiny_model_dir, tmp_path, monkeypatch, capsys
) -> None:
    from drdo_ray.generation import sampling

    def must_not_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the prompts were read before the resource check")

    monkeypatch.setattr(sampling, "read_prompts", must_not_read)
    out = tmp_path / "samples"
    argv = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(tmp_path / "prompts"),
        "--out",
        str(out),
    ]
    assert main([*argv, "--backend", "transformers", "--num-gpus", "1"]) == 2
    line = _error_line(capsys)
    assert "each actor needs {CPU: 1, GPU: 1}" in line and "GPU: 0" in line and "--num-gpus" in line
    # Five actors of Ray Data's 1 CPU each on a 4-CPU cluster.
    assert main([*argv, "--backend", "transformers", "--num-actors", "5"]) == 2
    assert "5 x {CPU: 1} = {CPU: 5} in all" in _error_line(capsys)
    assert not out.exists()


def test_generate_waits_for_nodes_no_longer_than_startup_timeout(
    ray_session, tiny_model_dir, tmp_path, monkeypatch, capsys
) -> None:
    """On a cluster that can add nodes, a pool that needs them waits at most --startup-timeout,
    then exits 2 with one line; no prompt is read before the wait is over."""
    from drdo_ray.generation import sampling

    def must_not_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the prompts were read before the nodes came up")

    monkeypatch.setattr(sampling, "read_prompts", must_not_read)
    monkeypatch.setenv(AUTOSCALING_ENV, "1")
    out = tmp_path / "samples"
    argv = ["generate", "--model", str(tiny_model_dir), "--prompts", str(tmp_path), "--out", str(out)]
    began = time.monotonic()
    assert main([*argv, "--backend", "transformers", "--num-gpus", "1", "--startup-timeout", "3"]) == 2
    assert time.monotonic() - began < 3 + 20
    line = _error_line(capsys)
    assert "each actor needs {CPU: 1, GPU: 1}" in line and "within 3s (--startup-timeout)" in line
    assert not out.exists()


def test_a_request_no_node_type_can_hold_fails_at_once(
    ray_session, tiny_model_dir, tmp_path, monkeypatch, capsys
) -> None:
    """On a cluster launched from cluster.yaml (its config where `ray up` leaves it on the head),
    a request none of its node types could ever hold is refused before any wait, naming them;
    one a node type can hold waits for it (here, at most --startup-timeout: no node comes)."""
    import shutil

    from drdo_ray import cluster_resources

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "cluster.yaml", bootstrap)
    monkeypatch.setattr(cluster_resources, "BOOTSTRAP_CONFIG", str(bootstrap))
    monkeypatch.delenv(AUTOSCALING_ENV)  # the launcher's config alone says the cluster can grow
    gen = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(tmp_path),
        "--backend",
        "transformers",
    ]
    gen += ["--out", str(tmp_path / "samples"), "--startup-timeout", "2"]
    began = time.monotonic()
    assert main([*gen, "--num-gpus", "16"]) == 2
    line = _error_line(capsys)
    assert "each actor needs {CPU: 1, GPU: 16} on one node" in line
    assert "gpu_serve {CPU: 8, GPU: 1, gpu_serve: 1}, gpu_train {CPU: 192, GPU: 8, gpu_train: 8}" in line
    serve = ["serve", "--model", str(tiny_model_dir), "--port", "0", "--app-name", APP]
    assert main([*serve, "--set", "resources_per_replica={tpu: 1}"]) == 2
    assert "each replica needs {CPU: 1, tpu: 1}" in _error_line(capsys)
    assert time.monotonic() - began < 30  # refused, not waited for
    assert APP not in _apps()
    # A GPU a gpu_serve node has: waited for, until --startup-timeout.
    assert main([*gen, "--num-gpus", "1", "--set", "resources_per_actor={gpu_serve: 1}"]) == 2
    assert "within 2s (--startup-timeout)" in _error_line(capsys)
