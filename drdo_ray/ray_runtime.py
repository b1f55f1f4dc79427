"""Joining a Ray cluster: the one that `ray job submit` / RAY_ADDRESS points at, else a local
one sized for this machine."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect once per process. Locally, advertise at least 4 CPUs: on a 2-core machine Ray Data
    read tasks and two training workers would otherwise wait on each other forever. Without
    RAY_ADDRESS the cluster is a new local one (``address="local"``): Ray would otherwise join the
    last `ray start` head recorded on this machine, and refuse the CPU count we pass it."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
        return
    cpus = num_cpus or int(os.environ.get("DRDO_RAY_NUM_CPUS", 0)) or max(4, os.cpu_count() or 1)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
