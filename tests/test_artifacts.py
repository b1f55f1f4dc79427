"""drdo_ray.artifacts: how stages tell paths, hub ids and object-store folders apart, check and
fetch models, and reuse or refuse cached outputs. Remote folders are fsspec's in-memory
filesystem here (``memory://``): the same code path as s3:// (tests/test_s3_pipeline.py runs
that one against a real S3 API)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import fsspec
import pytest

from drdo_ray import artifacts, storage
from drdo_ray.errors import UserError


@pytest.fixture
def remote():
    """A fresh memory:// folder, removed afterwards."""
    root = f"memory://artifacts-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.mark.parametrize(
    ("path", "remote", "hub"),
    [
        ("s3://bucket/models/sft", True, False),
        ("gs://bucket/m", True, False),
        ("file:///tmp/m", False, False),
        ("/abs/model", False, False),
        ("./rel/model", False, False),
        ("runs/x/models/sft", False, False),  # two slashes: a local path, never a hub id
        ("facebook/opt-125m", False, True),
        ("gpt2", False, True),
    ],
)
def test_paths_and_hub_ids(path, remote, hub):
    assert artifacts.is_remote(path) is remote
    assert artifacts.is_hub_id(path) is hub


def test_resolve_makes_existing_local_paths_absolute(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert artifacts.resolve("m") == str(tmp_path / "m")
    assert artifacts.resolve("s3://b/m") == "s3://b/m"
    assert artifacts.resolve("org/name") == "org/name"


def test_check_model_lists_remote_folders(remote, tiny_model_dir):
    model = f"{remote}/model"
    storage.upload_dir(str(tiny_model_dir), model)
    artifacts.check_model(model, role="policy")  # a model folder: fine
    with pytest.raises(UserError, match="not an Oracle"):
        artifacts.check_model(model, role="oracle", oracle=True)
    with pytest.raises(UserError, match="not a model folder"):
        artifacts.check_model(f"{remote}/nothing-here", role="policy")
    with pytest.raises(UserError, match="does not exist"):
        artifacts.check_model("/no/such/model", role="policy")


def test_local_model_downloads_once_and_again_after_a_change(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fs = fsspec.filesystem("memory")
    model = f"{remote}/model"
    fs.pipe(f"{model}/config.json", b'{"a": 1}')
    first = artifacts.local_model(model)
    assert Path(first, "config.json").read_bytes() == b'{"a": 1}'
    assert artifacts.local_model(model) == first  # cached
    fs.pipe(f"{model}/config.json", b'{"a": 22}')  # retrained in place
    second = artifacts.local_model(model)
    assert second != first and Path(second, "config.json").read_bytes() == b'{"a": 22}'
    assert artifacts.local_model("org/name") == "org/name"


def test_pad_id_and_fingerprint_of_a_model(tiny_model_dir, remote):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert artifacts.pad_id(str(tiny_model_dir)) == (
        tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    )
    local = artifacts.fingerprint(str(tiny_model_dir))
    storage.upload_dir(str(tiny_model_dir), f"{remote}/copy")
    assert artifacts.fingerprint(f"{remote}/copy") == local  # content, not location
    assert artifacts.fingerprint("org/name") == "hub:org/name"


def test_gpus_per_actor_takes_the_request_else_the_rule():
    assert artifacts.gpus_per_actor(0.5) == 0.5
    assert artifacts.gpus_per_actor(None) == (1 if artifacts.cluster_has_gpus() else 0)


def test_reusable_reuses_same_inputs_and_refuses_others(tmp_path):
    record = str(tmp_path / "out" / "made.json")
    same = lambda old: []  # noqa: E731
    assert artifacts.reusable(record, force=False, differences=same, out="OUT") is None  # nothing yet
    storage.makedirs(str(tmp_path / "out"))
    storage.write_json(record, {"model": "a"})
    assert artifacts.reusable(record, force=False, differences=same, out="OUT") == {"model": "a"}
    assert artifacts.reusable(record, force=True, differences=same, out="OUT") is None
    with pytest.raises(UserError, match="OUT was made with a different model; pass --force"):
        artifacts.reusable(record, force=False, differences=lambda old: ["a different model"], out="OUT")
    Path(record).write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        artifacts.reusable(record, force=False, differences=same, out="OUT")
