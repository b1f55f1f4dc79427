"""The resource pre-check as pure functions (no Ray): which requests a cluster can never hold,
the message naming what was asked and what the cluster has, how autoscaling is detected, and
the /health answer for each state of the served app."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drdo_ray import cluster_resources
from drdo_ray.cluster_resources import (
    NodeType,
    can_autoscale,
    format_resources,
    node_types_of,
    placement,
    shortfall,
)
from drdo_ray.serve.startup import health_state

CPU4 = {"CPU": 4.0, "memory": 8e9, "node:127.0.0.1": 1.0}
ROOT = Path(__file__).resolve().parents[1]


def test_requests_that_fit() -> None:
    assert shortfall({"CPU": 1, "GPU": 0}, 4, CPU4) is None  # 4 x 1 CPU = 4 <= 4
    assert shortfall({"GPU": 0.5}, 4, {"CPU": 8, "GPU": 2}) is None  # 4 x 0.5 = 2 GPUs
    assert shortfall({"CPU": 0.1}, 3, {"CPU": 0.3}) is None  # 0.30000000000000004 is 0.3
    assert shortfall({"CPU": 0, "GPU": 0}, 8, {}) is None  # asks for nothing
    assert shortfall({"GPU": 1}, 0, {}) is None  # no actor at all


def test_a_gpu_on_a_cpu_cluster() -> None:
    message = shortfall({"CPU": 1, "GPU": 1}, 1, CPU4, what="each replica")
    assert message == (
        "each replica needs {CPU: 1, GPU: 1}: {CPU: 1, GPU: 1} in all, "
        "but the cluster has {CPU: 4, GPU: 0} (short of GPU)"
    )


def test_the_count_multiplies_the_request() -> None:
    # 3 x {CPU 1, GPU 1} = {CPU 3, GPU 3}: the 8 CPUs cover it, the 2 GPUs do not.
    assert shortfall({"CPU": 1, "GPU": 1}, 2, {"CPU": 8, "GPU": 2}) is None
    message = shortfall({"CPU": 1, "GPU": 1}, 3, {"CPU": 8, "GPU": 2})
    assert message is not None
    assert "3 x {CPU: 1, GPU: 1} = {CPU: 3, GPU: 3} in all" in message
    assert "the cluster has {CPU: 8, GPU: 2} (short of GPU)" in message
    # 5 x 0.5 GPU = 2.5 > 2; 5 x 2 CPUs = 10 > 8: both named.
    assert shortfall({"CPU": 2, "GPU": 0.5}, 5, {"CPU": 8, "GPU": 2}).endswith("(short of CPU, GPU)")


def test_an_actor_never_spans_nodes() -> None:
    """Two 1-GPU nodes hold 2 GPUs in all, but no actor that needs 2 of them."""
    totals = {"CPU": 16, "GPU": 2}
    nodes = [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}]
    assert shortfall({"GPU": 1}, 2, totals, nodes) is None
    message = shortfall({"GPU": 2}, 1, totals, nodes)
    assert message == (
        "each actor needs {GPU: 2} on one node, but no node has that much "
        "(the cluster has {CPU: 16, GPU: 2} in all; its largest node {CPU: 8, GPU: 1})"
    )


def test_custom_resources_are_named() -> None:
    message = shortfall({"CPU": 1, "TPU": 4}, 1, CPU4)
    assert message is not None and "{CPU: 4, GPU: 0, TPU: 0} (short of TPU)" in message


def test_format_resources() -> None:
    assert format_resources({"GPU": 1.0, "CPU": 0.25}) == "{CPU: 0.25, GPU: 1}"
    assert format_resources(CPU4, ["CPU", "GPU"]) == "{CPU: 4, GPU: 0}"


def test_autoscaling_detection(monkeypatch, tmp_path) -> None:
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    monkeypatch.setattr(cluster_resources, "BOOTSTRAP_CONFIG", str(bootstrap))
    monkeypatch.delenv(cluster_resources.AUTOSCALING_ENV, raising=False)
    assert can_autoscale() is False  # a local cluster: no launcher config, no node groups
    bootstrap.write_text("cluster_name: test\n")  # what `ray up` leaves on the head node
    assert can_autoscale() is True
    monkeypatch.setenv(cluster_resources.AUTOSCALING_ENV, "0")  # the operator's word wins
    assert can_autoscale() is False
    bootstrap.unlink()
    monkeypatch.setenv(cluster_resources.AUTOSCALING_ENV, "1")
    assert can_autoscale() is True


def test_placement_on_a_cluster_that_can_grow() -> None:
    """cluster.yaml's node types: a request one of them can hold waits for it; one none can
    hold, at any size, is refused at once, naming the node types."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = node_types_of(config)
    assert types["gpu_train"] == NodeType({"CPU": 192, "GPU": 8, "gpu_train": 8}, 2)
    assert types["gpu_serve"] == NodeType({"CPU": 8, "GPU": 1, "gpu_serve": 1}, 4)
    head = [{"CPU": 0.0, "memory": 8e9}]  # the head advertises no CPU: every stage waits for a node
    totals = {"memory": 8e9}

    def verdict(request: dict, count: int = 1, **kw) -> tuple:
        return placement(request, count, totals, head, can_grow=True, types=types, **kw)

    assert verdict({"CPU": 1, "GPU": 1, "gpu_serve": 1})[0] == "grow"
    assert verdict({"CPU": 1, "gpu_train": 1}, 16)[0] == "grow"  # two gpu_train nodes of 8
    kind, why = verdict({"CPU": 1, "gpu_train": 1}, 17)  # 2 x 8 at most
    assert kind == "never" and "short of gpu_train" in why and "gpu_train {CPU: 192" in why
    kind, why = verdict({"CPU": 1, "GPU": 16})  # no node type has 16 GPUs
    assert kind == "never" and "on one node, but no node has that much" in why
    assert verdict({"CPU": 1, "tpu": 1})[0] == "never"
    # Unknown node types (DRDO_RAY_AUTOSCALING=1 alone): the benefit of the doubt.
    assert placement({"CPU": 1, "tpu": 1}, 1, totals, head, can_grow=True)[0] == "grow"
    assert placement({"CPU": 1}, 1, totals, head, can_grow=False)[0] == "never"
    assert placement({"CPU": 1}, 1, CPU4, [CPU4], can_grow=False) == ("fits", None)


@pytest.mark.parametrize(
    ("resources", "message"),
    [({"GPU": 1}, "set by the stage's own CPU/GPU fields"), ({"gpu_serve": 0}, "amounts must be > 0")],
)
def test_custom_resources_are_checked(resources: dict, message: str) -> None:
    from pydantic import ValidationError

    from drdo_ray.config import ScoreConfig, ServeConfig

    with pytest.raises(ValidationError, match=message):
        ScoreConfig(data="d", out="o", resources_per_actor=resources)
    with pytest.raises(ValidationError, match=message):
        ServeConfig(model="m", resources_per_replica=resources)


@pytest.mark.parametrize(
    ("state", "code", "body"),
    [
        ((None, 0, ""), 503, {"status": "absent", "reason": "the model's application is not deployed"}),
        (("RUNNING", 1, ""), 200, {"status": "ok"}),
        (("RUNNING", 0, ""), 200, {"status": "ok"}),  # scaled to zero: the next request starts one
        (("DEPLOYING", 1, "scaling 1 -> 2"), 200, {"status": "ok"}),  # one replica serves already
        (("DEPLOYING", 0, ""), 503, {"status": "starting", "reason": "no replica is ready yet"}),
        (
            ("DEPLOYING", 0, "taking 30s to initialize"),
            503,
            {"status": "starting", "reason": "taking 30s to initialize"},
        ),
        (("DEPLOYING", 0, "slow", "needs GPU"), 503, {"status": "unschedulable", "reason": "needs GPU"}),
        (
            ("DEPLOY_FAILED", 0, "OSError: no weights"),
            503,
            {"status": "failed", "reason": "OSError: no weights"},
        ),
        (("UNHEALTHY", 0, ""), 503, {"status": "failed", "reason": "the application is UNHEALTHY"}),
    ],
)
def test_health_states(state, code, body) -> None:
    assert health_state(*state) == (code, body)
