"""The cluster path without a cloud: (1) a 2-node `ray.cluster_utils.Cluster` runs the tiny
pipeline's training stage with its 2 workers on different nodes, every node writing to one run
directory; (2) a local head started here takes a pipeline job through `JobSubmissionClient`,
the way `ray job submit --working-dir .` sends one to cluster.yaml's head, started with that
head's settings (token auth). Both run in processes of their own (this session already holds a
ray.init()); the head is stopped by its process group, never `ray stop`, which would take other
clusters on this machine with it."""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from local_head import OFFLINE, ROOT, generate_token, local_head, node_start_settings, run_script

# What the job's working_dir leaves out (as .rayignore does for `ray job submit --working-dir .`).
EXCLUDES = [
    ".git",
    ".venv",
    "demo_run",
    "runs",
    "bench_*",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "__pycache__",
]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_node_training_spreads_workers_and_shares_one_run_dir(tmp_path):
    run = tmp_path / "run"
    result = run_script("cluster_pipeline.py", run, timeout_s=400)
    assert len(result["nodes"]) == 2
    assert {k: v["status"] for k, v in result["result"]["stages"].items()} == {
        "model": "done",
        "prepare:tldr_sft": "done",
        "sft": "done",
    }

    # Each rank recorded the node it ran on: two ranks, two different nodes of this cluster.
    workers = [
        json.loads(p.read_text()) for p in sorted((run / "train" / "sft" / "workers").glob("rank-*.json"))
    ]
    assert [w["rank"] for w in workers] == [0, 1]
    assert workers[0]["node_id"] != workers[1]["node_id"]
    assert {w["node_id"] for w in workers} == set(result["nodes"])
    # Both nodes wrote into the one run directory: checkpoints, metrics, the exported model.
    assert sorted(p.name for p in (run / "train" / "sft").glob("step_*")) == ["step_0000001", "step_0000002"]
    status = json.loads((run / "train" / "sft" / "status.json").read_text())
    assert (status["status"], status["global_step"]) == ("finished", 2)
    assert (run / "models" / "sft" / "model.safetensors").exists()
    recorded = json.loads((run / "pipeline.json").read_text())
    assert recorded["stages"]["sft"]["status"] == "done" and recorded["stages"]["sft"]["elapsed_s"] > 0


@pytest.fixture
def ray_head(tmp_path):
    """A local head with cluster.yaml's own settings (token auth, dashboard on loopback), its
    token in a temp dir; yields the Jobs API's address and the token's request headers."""
    token_file = generate_token(tmp_path / "home")
    headers = {"Authorization": f"Bearer {token_file.read_text()}"}
    settings = node_start_settings("head_start_ray_commands")[0]
    env = settings.env | {"RAY_AUTH_TOKEN_PATH": str(token_file)}
    with local_head(
        tmp_path / "head.log", env=env, dashboard_host=settings.flags["--dashboard-host"], headers=headers
    ) as head:
        yield head.dashboard, headers


def _submit(client, run: Path) -> str:
    """Submit the tiny pipeline's first stages. The Jobs API answers before the head's job agent is
    up ("No available agent to submit job, please try again later"): retry that, nothing else."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return client.submit_job(
                entrypoint=f"python jobs/pipeline.py --config configs/demo-tiny-cpu.yaml --set run_dir={run} "
                "--stages model,prepare:tldr_easy",
                runtime_env={"working_dir": str(ROOT), "excludes": EXCLUDES, "env_vars": OFFLINE},
            )
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _wait(client, job: str, deadline: float):
    """The job's final status (succeeded, failed or stopped), polled until ``deadline``."""
    from ray.job_submission import JobStatus

    while (status := client.get_job_status(job)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline, f"job {job} still {status} at the deadline"
        time.sleep(2)
    return status


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_pipeline_job_through_job_submission_client(ray_head, tmp_path):
    from ray._private.runtime_env.packaging import create_package
    from ray.job_submission import JobStatus, JobSubmissionClient

    # The upload is the code and configs, not the venv, the git history or local runs.
    package = tmp_path / "working_dir.zip"
    create_package(str(ROOT), package, include_gitignore=True, excludes=EXCLUDES)
    names = zipfile.ZipFile(package).namelist()
    assert "jobs/pipeline.py" in names and "configs/demo-tiny-cpu.yaml" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "demo_run/"))]
    assert package.stat().st_size < 8 * 2**20

    run = tmp_path / "run"
    address, headers = ray_head
    client = JobSubmissionClient(address, headers=headers)
    deadline = time.monotonic() + 360
    job = _submit(client, run)
    status = _wait(client, job, deadline)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    # Progress per stage, with its time, in the job's logs.
    assert "[1/2] model" in logs and "[2/2] prepare:tldr_easy" in logs
    assert "done  [2/2] prepare:tldr_easy in" in logs
    stats = json.loads((run / "data" / "tldr_easy" / "stats.json").read_text())
    assert stats["rows_written"] > 0
    recorded = json.loads((run / "pipeline.json").read_text())
    assert [recorded["stages"][k]["status"] for k in ("model", "prepare:tldr_easy")] == ["done", "done"]

    # Resubmitting the same command skips what is done: the resume path of a failed run.
    again = _submit(client, run)
    status = _wait(client, again, deadline)
    logs = client.get_job_logs(again)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "skip  [2/2] prepare:tldr_easy" in logs


def test_cluster_yaml_matches_the_cluster_path():
    """What the README's cluster path relies on, beyond Ray's schema (test_config_and_entrypoints.py)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)
    assert re.fullmatch(r"rayproject/ray:2\.60\.0-py3\d+-gpu", config["docker"]["image"])
    types = config["available_node_types"]
    assert types["head"]["resources"].get("GPU", 0) == 0 and config["head_node_type"] == "head"
    train, serve = types["gpu_train"], types["gpu_serve"]
    assert train["resources"]["GPU"] == 8 and train["min_workers"] == 0 < train["max_workers"]  # autoscaling
    assert serve["resources"]["GPU"] == 1 and serve["min_workers"] == 0 < serve["max_workers"]
    # The paper configs' 8 training workers fit one gpu_train node.
    assert all(
        _load_train_workers(name) <= train["resources"]["GPU"]
        for name in ("opt-1.3b-ultrafeedback.yaml", "phi3-mini-tldr-easy.yaml")
    )
    # Workers write the shared S3 run directory: they need an instance profile of their own.
    assert all("IamInstanceProfile" in t["node_config"] for t in (train, serve))
    # The nodes install this package with its gpu extra, from the checkout file_mounts ships.
    assert any(re.search(r"pip install .*drdo-ray\[[^]]*\bgpu\b", c) for c in config["setup_commands"])
    assert "." in config["file_mounts"].values()
    assert ".venv" in config["rsync_exclude"] and ".git" in config["rsync_exclude"]


def _load_train_workers(name: str) -> int:
    return yaml.safe_load((ROOT / "configs" / name).read_text())["pipeline"]["train"]["num_workers"]
