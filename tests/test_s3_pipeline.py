"""The s3:// run path against a real S3 API on loopback: moto's standalone server, s3fs for
fsspec, pyarrow's S3 filesystem for Ray Train and Ray Data. The tiny pipeline (model ->
prepare -> SFT -> Oracle -> score -> align -> generate -> win rate -> report, the smallest
scale) runs with ``run_dir=s3://BUCKET/run`` through the CLI, in a process of its own (its Ray
workers must start with the endpoint and credentials in their environment, as a cluster's
nodes would). Every artifact must land in the bucket, a rerun must skip every finished stage,
and no output may hold the credentials."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "drdo-test"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_env():
    """A moto S3 server on 127.0.0.1 and the environment that points every client at it: the
    credentials and the endpoint travel only as environment variables (botocore/s3fs and
    pyarrow's S3 filesystem, under Ray Train and Ray Data, all read AWS_ENDPOINT_URL)."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield env, client
    finally:
        server.stop()


def _config(tmp_path: Path) -> Path:
    """configs/demo-tiny-cpu.yaml cut to one Oracle, one aligned policy, one comparison and the
    fewest steps, under s3://."""
    cfg = yaml.safe_load((ROOT / "configs" / "demo-tiny-cpu.yaml").read_text())["pipeline"]
    cfg["run_dir"] = f"s3://{BUCKET}/run"
    cfg["datasets"] = {k: v for k, v in cfg["datasets"].items() if k in ("tldr_easy", "tldr_sft")}
    cfg["train"] |= {"num_workers": 1, "max_steps": 2, "checkpoint_every": 1, "micro_batch_size": 2}
    cfg["oracle"] = {"data": "tldr_easy", "lr": 1.0e-3}
    cfg["edpo_oracles"] = 0
    cfg["align"] = {"lr": 5.0e-4, "runs": {"drdo": {}}}
    cfg["generate"] |= {"temperatures": [0.7], "limit": 2, "max_new_tokens": 4}
    cfg["winrate"] = {"a": "align-drdo", "against": ["sft"], "bootstrap": 10}
    cfg.pop("judge", None)
    path = tmp_path / "s3-pipeline.yaml"
    path.write_text(yaml.safe_dump({"pipeline": cfg}))
    return path


def _run(config: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    return subprocess.run(
        [sys.executable, "-m", "drdo_ray.cli", "pipeline", "--config", str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=keep | OFFLINE | env | {"DRDO_RAY_NUM_CPUS": "4", "PYTHONPATH": str(ROOT)},
    )


def _objects(client) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipeline_runs_under_s3_and_skips_on_rerun(s3_env, tmp_path):
    env, client = s3_env
    config = _config(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    first = _run(config, env, work)
    assert first.returncode == 0, first.stderr[-6000:]

    objects = _objects(client)
    expected = [
        "run/pipeline.json",
        "run/models/tiny/config.json",
        "run/data/tldr_sft/stats.json",
        "run/data/tldr_easy/stats.json",
        "run/models/sft/config.json",
        "run/models/sft/model.safetensors",
        "run/models/oracle/reward_head.safetensors",
        "run/train/sft/status.json",
        "run/scored/tldr_easy/scoring.json",
        "run/models/align-drdo/model.safetensors",
        "run/samples/tldr_sft/sft/generation.json",
        "run/samples/tldr_sft/align-drdo/generation.json",
        "run/eval/tldr_sft/winrate-align-drdo-vs-sft/winrate.json",
        "run/report/report.md",
    ]
    missing = [key for key in expected if key not in objects]
    assert not missing, (missing, sorted(objects))
    for folder in ("run/data/tldr_sft/data/", "run/scored/tldr_easy/data/"):
        assert any(k.startswith(folder) and k.endswith(".parquet") and objects[k] for k in objects), folder
    assert not any(work.iterdir()), "nothing may be written to the working directory"

    status = json.loads(client.get_object(Bucket=BUCKET, Key="run/pipeline.json")["Body"].read())
    stages = status["stages"]
    assert stages and all(entry["status"] == "done" for entry in stages.values()), stages
    winrate = json.loads(
        client.get_object(Bucket=BUCKET, Key="run/eval/tldr_sft/winrate-align-drdo-vs-sft/winrate.json")[
            "Body"
        ].read()
    )
    assert winrate["wins"] + winrate["ties"] + winrate["losses"] == 2

    second = _run(config, env, work)
    assert second.returncode == 0, second.stderr[-6000:]
    rerun = json.loads(client.get_object(Bucket=BUCKET, Key="run/pipeline.json")["Body"].read())["stages"]
    assert {k: v["status"] for k, v in rerun.items() if k != "report"} == {
        k: "skipped: outputs exist" for k in stages if k != "report"
    }
    after = _objects(client)
    assert all(after[k] == objects[k] for k in objects if k.startswith("run/models/"))

    secret_values = [env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]]
    for key in after:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert not any(s.encode() in body for s in secret_values), key
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert not any(s in text for s in secret_values)


def _dry_run(config: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    return subprocess.run(
        [sys.executable, "-m", "drdo_ray.cli", "pipeline", "--config", str(config), "--dry-run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=keep | OFFLINE | env | {"PYTHONPATH": str(ROOT)},
    )


def test_an_unreachable_store_is_one_line_not_a_traceback(s3_env, tmp_path):
    env, _ = s3_env
    config = _config(tmp_path)
    assert _dry_run(config, env, tmp_path).returncode == 0  # with the credentials: the plan
    # The same store without credentials (and none a default file or instance profile could give).
    bare = {
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = _dry_run(config, bare, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("drdo-ray: error:")]
    assert len(error) == 1 and f"cannot reach s3://{BUCKET}/run/" in error[0]
    assert "NoCredentialsError" in error[0] and "AWS_ACCESS_KEY_ID" in error[0]
