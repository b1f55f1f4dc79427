"""Helper of the autoscaling tests: cluster.yaml's autoscaling, simulated on this machine with
Ray's own fake multi-node provider (the one Ray's autoscaler tests use), started by
`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE` on free ports and ended by its
process group (never `ray stop`, nor AutoscalingCluster.start()/shutdown(), which run it).

The fake cluster's worker node types are cluster.yaml's: the same names and min/max workers,
resources shrunk in proportion (the largest type to ``largest_cpus`` CPUs), no GPUs (an
advertised GPU would make replicas ask for one and Ray Train pick NCCL); the node-type
resources (gpu_train, gpu_serve) tell them apart, as on the real cluster."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_head import Head, cluster_yaml, generate_token, local_head, node_start_settings

HEAD_TYPE = "ray.head.default"  # the name the fake provider gives its head


def scaled_node_types(config: dict[str, Any], largest_cpus: int = 2) -> dict[str, Any]:
    """cluster.yaml's worker node types for the fake provider, scaled down."""
    workers = {n: t for n, t in config["available_node_types"].items() if n != config["head_node_type"]}
    factor = largest_cpus / max(float(t["resources"].get("CPU", 0)) for t in workers.values())
    scaled = {}
    for name, spec in workers.items():
        resources = {
            key: max(1, math.ceil(float(amount) * factor))
            for key, amount in spec["resources"].items()
            if key != "GPU" and float(amount) > 0
        }
        scaled[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": spec.get("min_workers", 0),
            "max_workers": spec["max_workers"],
        }
    return scaled


def fake_autoscaling_config(
    gcs_address: str, *, idle_timeout_minutes: float, largest_cpus: int = 2, head_cpus: int = 0
) -> dict[str, Any]:
    """The autoscaler's config for a fake cluster made from cluster.yaml."""
    config = cluster_yaml()
    head = config["available_node_types"][config["head_node_type"]]
    types = scaled_node_types(config, largest_cpus)
    types[HEAD_TYPE] = {
        "resources": {**{k: v for k, v in head["resources"].items() if k != "GPU"}, "CPU": head_cpus},
        "node_config": {},
        "max_workers": 0,
    }
    return {
        "cluster_name": "drdo-ray-fake",
        "max_workers": config["max_workers"],
        "upscaling_speed": config.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,  # the provider's nodes join this head (its default is port 6379)
        },
        "auth": {},
        "available_node_types": types,
        "head_node_type": HEAD_TYPE,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@dataclass(frozen=True)
class FakeCluster:
    head: Head
    home: Path  # the head's HOME: ray_bootstrap_config.yaml and .ray/auth_token, as on `ray up`'s head
    env: dict[str, str]  # what a driver or the CLI on the head needs: HOME, the auth mode
    headers: dict[str, str]  # the Jobs API's token header


@contextmanager
def fake_autoscaling_head(tmp: Path, *, idle_timeout_minutes: float = 0.1) -> Iterator[FakeCluster]:
    """A head started with cluster.yaml's settings (token auth, dashboard on loopback) whose
    autoscaler launches cluster.yaml's (scaled) node types as local processes. Its HOME is a
    temp dir holding what `ray up` leaves on a head: the autoscaler's config at
    ~/ray_bootstrap_config.yaml (which the commands read) and the token at ~/.ray/auth_token."""
    home = tmp / "home"
    token = generate_token(home)
    config_file = home / "ray_bootstrap_config.yaml"

    def write(gcs_address: str) -> list[str]:
        config = fake_autoscaling_config(gcs_address, idle_timeout_minutes=idle_timeout_minutes)
        config_file.write_text(json.dumps(config))  # JSON is YAML, as the launcher writes it
        return [f"--autoscaling-config={config_file}"]

    settings = node_start_settings("head_start_ray_commands")[0]
    env = {**settings.env, "HOME": str(home)}
    fake = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    headers = {"Authorization": f"Bearer {token.read_text()}"}
    host = settings.flags["--dashboard-host"]
    with local_head(
        tmp / "head.log", env=fake, flags_for=write, num_cpus=0, dashboard_host=host, headers=headers
    ) as head:
        yield FakeCluster(head, home, env, headers)
