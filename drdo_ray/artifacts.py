"""Run artifacts: what a stage may read and how, decided in one place.

- Paths: a stage input is a local path, an object-store URI (``s3://``, ``gs://``; read through
  fsspec, see :mod:`drdo_ray.storage` for the file I/O) or a hub id. :func:`resolve` makes local
  paths absolute (Ray actors run elsewhere than the driver's cwd).
- Models: :func:`check_model` fails on the driver, in one line, before any worker loads a bad
  model; :func:`local_model` is what every loader (actor, worker, driver) passes to
  ``from_pretrained`` or to a generation engine (an object-store folder is downloaded once per
  node); :func:`pad_id`; :func:`device_dtype` and :func:`gpus_per_actor` are the one "use GPUs
  here?" rule.
- Names: :func:`edpo_oracle_name` names the e-DPO Oracles' runs (``train oracle --edpo-oracles K``
  and the pipeline's ``edpo_oracles: K`` agree on it).
- Fingerprints: :func:`fingerprint` is a content id of a model or dataset folder, and
  :func:`reusable` the rule every cached stage output follows: reuse what was made from the same
  inputs, refuse (never silently reuse) what was made from others unless forced.

Importing this module loads neither torch, transformers nor Ray."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec

from . import storage
from .errors import UserError

REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_EDGE_BYTES = 1 << 20  # fingerprint reads the first and last MiB of each weights file


# --------------------------------------------------------------------------------- paths


def is_remote(path: str) -> bool:
    """An object-store (or any fsspec) URI; ``file://`` counts as local."""
    return bool(REMOTE.match(path)) and not path.startswith("file://")


def looks_local(path: str) -> bool:
    """A spelling that can only mean a local path (so a miss is 'does not exist', not a hub id)."""
    return path.startswith(("/", ".", "~", "file://")) or "\\" in path or path.count("/") > 1


def is_hub_id(path: str) -> bool:
    return not is_remote(path) and not looks_local(path) and bool(HUB_ID.match(path))


def resolve(path: str) -> str:
    """Absolute path for an existing local path; remote URIs and hub ids as given."""
    if is_remote(path):
        return path
    local = Path(path.removeprefix("file://")).expanduser()
    return str(local.resolve()) if local.exists() else path


def local_model(path: str) -> str:
    """What to hand ``from_pretrained``: a local folder or hub id as is; an object-store folder
    (s3://...) downloaded into a per-node cache keyed by the URI and its listing (names, sizes,
    ETags), so a model retrained in place is fetched again, not served stale."""
    if not is_remote(path):
        return path.removeprefix("file://")
    import os
    import shutil
    import tempfile

    fs, root = fsspec.core.url_to_fs(path)
    listing = sorted(
        (
            name,
            info.get("size"),
            str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")),
        )
        for name, info in fs.find(root, detail=True).items()
    )
    if not listing:
        raise FileNotFoundError(f"{path} holds no files")
    key = hashlib.sha1(repr((path, listing)).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "drdo-models"
    target = cache / key
    if not target.is_dir():
        # Download beside, then rename: actors on one node may fetch the same model at once.
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
        fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def edpo_oracle_name(base: str, k: int) -> str:
    """The run (and model folder) name of the ``k``-th e-DPO Oracle trained from the Oracle run
    ``base``: ``oracle`` -> ``oracle-edpo-0`` .. ``oracle-edpo-<K-1>`` (``models/<name>/``,
    ``train/<name>/``). The one spelling for the CLI's ``fit_oracles`` and the pipeline."""
    return f"{base}-edpo-{k}"


# -------------------------------------------------------------------------------- models


def check_model(path: str, *, role: str, oracle: bool = False) -> None:
    """Fail on the driver, with one line, before any actor tries to load a bad model. Remote
    folders are checked by listing, without downloading the weights."""
    from .models.reward_head import HEAD_WEIGHTS

    path = path.removeprefix("file://")
    if is_remote(path) or Path(path).exists():
        fs, root = fsspec.core.url_to_fs(path)
        base = root.rstrip("/")
        if fs.isfile(f"{base}/adapter_config.json") and not fs.isfile(f"{base}/config.json"):
            raise UserError(
                f"{role} {path} holds LoRA adapters only (lora.export adapters): train with "
                "lora.export merged (the default) for a model folder this stage reads"
            )
        if not fs.isdir(root) or not fs.isfile(f"{base}/config.json"):
            raise UserError(f"{role} {path} is not a model folder (no config.json)")
        if oracle and not fs.isfile(f"{base}/{HEAD_WEIGHTS}"):
            raise UserError(f"{role} {path} is not an Oracle (no reward head: {HEAD_WEIGHTS} missing)")
        return
    if not is_hub_id(path):
        raise UserError(f"{role} path does not exist: {path}")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except Exception as err:  # offline, unknown id, auth: one line for the user
        raise UserError(
            f"{role} not found: {path} is neither a local folder nor loadable from the hub ({err})"
        ) from err
    if oracle and not _hub_has_file(path, HEAD_WEIGHTS):
        raise UserError(f"{role} {path} is not an Oracle (no reward head: {HEAD_WEIGHTS} missing)")


def _hub_has_file(hub_id: str, name: str) -> bool:
    from transformers.utils import cached_file

    found = cached_file(
        hub_id,
        name,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return found is not None


def pad_id(path: str) -> int:
    """The pad id of a model: its tokenizer's pad (else EOS) token, else its config's. Any valid
    id works where it is used (pads are masked out of attention, log-probs and rewards), but a
    model defining neither is refused rather than padded with a real token."""
    local = local_model(path)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(local)
        for value in (tok.pad_token_id, tok.eos_token_id):
            if value is not None:
                return int(value)
    except Exception:  # a model folder without a tokenizer: fall back to its config
        pass
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(local).get_text_config()
    for value in (getattr(config, "pad_token_id", None), getattr(config, "eos_token_id", None)):
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    raise UserError(f"{path} defines neither a pad nor an EOS token")


def cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


def cluster_has_gpus() -> bool:
    """The "use GPUs?" rule: CUDA on this node, or a GPU anywhere in the connected Ray cluster
    (the driver may sit on a CPU head node while GPU workers do the work)."""
    if cuda_here():
        return True
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1


def gpus_per_actor(requested: float | None) -> float:
    """GPUs for one inference actor or replica: as requested, else one wherever the cluster
    has GPUs, else none."""
    if requested is not None:
        return requested
    return 1 if cluster_has_gpus() else 0


def device_dtype(dtype: str = "auto", device: str = "auto") -> tuple[Any, Any]:
    """(torch device, torch dtype) for a frozen model on this process: ``device`` auto is CUDA
    when visible here; ``dtype`` auto is bf16 on CUDA (half the memory, tensor-core speed),
    float32 on CPU (CPU bf16 is slow and coarse)."""
    import torch

    device = torch.device(("cuda" if cuda_here() else "cpu") if device == "auto" else device)
    if dtype == "auto":
        return device, torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, getattr(torch, dtype)


# --------------------------------------------------------------------------- fingerprints


def parquet_files(data_dir: str) -> list[tuple[str, int]]:
    """(path relative to DIR/data, size) of every parquet file of a dataset folder, sorted."""
    fs, root = fsspec.core.url_to_fs(storage.join(data_dir, "data"))
    if not fs.isdir(root):
        return []
    found = fs.find(root, detail=True)
    prefix = root.rstrip("/") + "/"
    return sorted(
        (name[len(prefix) :] if name.startswith(prefix) else name, int(info["size"]))
        for name, info in found.items()
        if name.endswith(".parquet")
    )


def _edge_digest(fs: Any, path: str, size: int) -> str:
    with fs.open(path, "rb") as f:
        head = f.read(_EDGE_BYTES)
        f.seek(max(0, size - _EDGE_BYTES))
        tail = f.read(_EDGE_BYTES)
    return hashlib.sha256(head).hexdigest() + hashlib.sha256(tail).hexdigest()


def fingerprint(path: str) -> str:
    """A cheap, deterministic, content-based id of a model folder, a prepared dataset folder or
    a hub id ("hub:<id>"). Model: config.json bytes + each weights file's name, size and the
    sha256 of its first and last MiB (reading whole multi-GB checkpoints would cost more than
    scoring a small dataset). Dataset: stats.json bytes + parquet file names and sizes."""
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(root):
        if is_hub_id(path):
            return f"hub:{path}"
        raise UserError(f"path does not exist: {path}")
    if not fs.isdir(root):
        raise UserError(f"{path} is a file; expected a model folder or a prepared dataset folder")
    digest = hashlib.sha256()
    base = root.rstrip("/")
    if fs.exists(f"{base}/config.json"):
        digest.update(b"model\0" + fs.cat_file(f"{base}/config.json"))
        for info in sorted(fs.ls(root, detail=True), key=lambda i: i["name"]):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and name.endswith(WEIGHT_SUFFIXES):
                size = int(info["size"])
                digest.update(f"\0{name}\0{size}\0{_edge_digest(fs, info['name'], size)}".encode())
    elif fs.exists(f"{base}/stats.json"):
        digest.update(b"dataset\0" + fs.cat_file(f"{base}/stats.json"))
        for name, size in parquet_files(path):
            digest.update(f"\0{name}\0{size}".encode())
    else:
        raise UserError(f"{path} is neither a model folder (config.json) nor a prepared dataset (stats.json)")
    return "sha256:" + digest.hexdigest()


def reusable(
    record: str, *, force: bool, differences: Callable[[dict[str, Any]], list[str]], out: str
) -> dict[str, Any] | None:
    """The reuse rule of a cached stage output whose provenance is the JSON file ``record``:
    None when there is nothing to reuse (absent, or ``force``); the recorded provenance when it
    was made from the same inputs (``differences(old)`` is empty); a UserError naming the
    differences otherwise, since silently reusing or overwriting either would be wrong."""
    if force or not storage.exists(record):
        return None
    try:
        old = storage.read_json(record)
    except ValueError as err:
        raise UserError(f"{record} is unreadable ({err}); pass --force or choose another --out") from err
    diffs = differences(old)
    if diffs:
        raise UserError(f"{out} was made with {'; '.join(diffs)}; pass --force or choose another --out")
    return old
