"""Shared fixtures: one local Ray cluster per test session, one tiny model per session.
Everything runs offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray cluster shared by the whole session. 4 logical CPUs on a 2-core machine so
    Ray Data tasks and training workers never wait on each other."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-init Llama + locally trained tokenizer, built once per session."""
    from drdo_ray.models import build_tiny_model

    return Path(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))
