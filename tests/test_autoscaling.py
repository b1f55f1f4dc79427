"""cluster.yaml's autoscaling, simulated with Ray's fake multi-node provider (tests/fake_cluster.py):
a head with no CPU and no worker node, whose autoscaler adds cluster.yaml's node types (scaled
down, no GPUs, told apart by their gpu_train / gpu_serve resources) as local processes.

(c) a request no node type can ever hold fails at once, exit 2, naming the node types;
(b) `serve` whose replicas need a gpu_serve node: /health says starting while the node comes
    up, then 200;
(a) the tiny pipeline as a Ray job: training waits for gpu_train nodes and scoring for a
    gpu_serve node, every stage finishes, and the nodes go away after the (shortened) idle
    timeout. Prints the nodes started and stopped.

`make test-cluster` (minutes); the fast core of (c) is in tests/test_serve_startup.py."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_cluster import FakeCluster, fake_autoscaling_head

try:  # the openai client's HTTP library (httpx2 in this environment, httpx elsewhere)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]
from local_head import BIN, OFFLINE, ROOT, base_env, free_ports, http_status

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _monitor_log(fc: FakeCluster) -> str:
    return next(Path(fc.head.temp_dir).glob("session_*/logs/monitor.log")).read_text()


def _launched(fc: FakeCluster) -> Counter[str]:
    """Nodes the autoscaler launched, by node type: the fake provider makes one node per launch,
    whatever count the launch asks for (its launch_multiple is off)."""
    pattern = r"NodeLauncher\d+: Launching \d+ nodes, type ([\w-]+)\."
    return Counter(re.findall(pattern, _monitor_log(fc)))


def _terminated(fc: FakeCluster) -> int:
    """Nodes the autoscaler terminated (each once, whatever the reason)."""
    return len(set(re.findall(r"NodeProvider: (\w+): Terminating node", _monitor_log(fc))))


def _alive_workers(fc: FakeCluster) -> int:
    # Ray may print its own notes on stdout (a head without CPUs says so): the count has a marker.
    code = "import ray; ray.init(logging_level='ERROR'); print('ALIVE', sum(n['Alive'] for n in ray.nodes()) - 1)"
    env = base_env(fc.env | {"RAY_ADDRESS": fc.head.address})
    proc = subprocess.run(
        [str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ALIVE ")))


def _drdo(fc: FakeCluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = base_env(fc.env | {"RAY_ADDRESS": fc.head.address})
    return subprocess.run(
        [str(BIN / "drdo-ray"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(900)
def test_serve_waits_for_a_gpu_serve_node_and_impossible_requests_fail_at_once(tmp_path, tiny_model_dir):
    with fake_autoscaling_head(tmp_path) as fc:
        # (c) No node type has a GPU (none is advertised here): refused at once, naming them.
        began = time.monotonic()
        refused = _drdo(
            fc, "serve", "--model", str(tiny_model_dir), "--num-gpus-per-replica", "1", "--detach"
        )
        assert refused.returncode == 2, refused.stderr[-2000:]
        line = refused.stderr.strip().splitlines()[-1]
        assert "each replica needs {CPU: 1, GPU: 1}" in line and "gpu_serve {CPU: 1, gpu_serve: 1}" in line
        assert time.monotonic() - began < 60 and not _launched(fc)

        # (b) A replica only a gpu_serve node can hold: /health says starting, then 200.
        (port,) = free_ports(1)
        env = base_env(fc.env | {"RAY_ADDRESS": fc.head.address})
        argv = ["serve", "--model", str(tiny_model_dir), "--backend", "transformers", "--port", str(port)]
        argv += ["--detach", "--startup-timeout", "300", "--set", "resources_per_replica={gpu_serve: 1}"]
        serve = subprocess.Popen(
            [str(BIN / "drdo-ray"), *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "serve.log").open("w"),
        )
        answers: list[tuple[int, str]] = []
        deadline = time.monotonic() + 360
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            answers.append((r.status_code, r.text))
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert serve.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        assert answers and answers[-1][0] == 200, answers[-3:]
        # It deployed knowing no node could hold a replica yet, and waited for one.
        said = " ".join((tmp_path / "serve.log").read_text().split())  # the console wraps long lines
        assert "the cluster can autoscale: waiting up to 300s for nodes" in said
        starting = [text for code, text in answers if code == 503]
        assert starting and all('"starting"' in t for t in starting), starting[:3]
        assert _launched(fc)["gpu_serve"] >= 1
        print(f"serve on an autoscaling cluster: {len(starting)} x 503 starting, then 200")


@pytest.mark.timeout(1500)
def test_the_pipeline_job_scales_up_from_no_worker_node_and_back(tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    run = tmp_path / "run"
    stages = "model,prepare:tldr_full,prepare:tldr_easy,prepare:tldr_sft,sft,oracle,score:tldr_easy"
    overrides = [
        f"run_dir={run}",
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "train.resources_per_worker={gpu_train: 1}",  # the 2 workers: one per (scaled) gpu_train node
        "score.resources_per_actor={gpu_serve: 1}",
    ]
    # By path, not --working-dir: the fake nodes share this machine's disk (and would share, and
    # clean up under each other, one unpacked copy of the package).
    entrypoint = f"python {ROOT}/jobs/pipeline.py --config {ROOT}/configs/demo-tiny-cpu.yaml " + " ".join(
        f"--set {shlex.quote(o)}" for o in overrides
    )
    with fake_autoscaling_head(tmp_path, idle_timeout_minutes=0.25) as fc:
        assert _alive_workers(fc) == 0
        client = JobSubmissionClient(fc.head.dashboard, headers=fc.headers)
        began = time.monotonic()
        job = client.submit_job(
            entrypoint=f"{entrypoint} --stages {stages}",
            runtime_env={"env_vars": OFFLINE},
        )
        while (status := client.get_job_status(job)) not in {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        }:
            assert time.monotonic() - began < 1300, f"job still {status}"
            time.sleep(5)
        logs = client.get_job_logs(job)
        (tmp_path / "job.log").write_text(logs)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
        job_s = time.monotonic() - began
        for stage in stages.split(","):
            assert re.search(rf"done\s+\[\d+/\d+\] {re.escape(stage)} in", logs), stage

        # Training ran on gpu_train nodes, one rank each; scoring could only run on a gpu_serve node.
        import json

        ranks = [
            json.loads(p.read_text()) for p in sorted((run / "train" / "sft" / "workers").glob("*.json"))
        ]
        assert [r["node_resources"].get("gpu_train") for r in ranks] == [1.0, 1.0]
        assert len({r["node_id"] for r in ranks}) == 2
        assert (run / "scored" / "tldr_easy" / "scoring.json").exists()
        launched = _launched(fc)
        assert launched["gpu_train"] >= 2 and launched["gpu_serve"] >= 1, launched

        # Idle nodes go after the idle timeout (15 s here): back to the head alone.
        idle_began = time.monotonic()
        while _alive_workers(fc) > 0:
            assert time.monotonic() - idle_began < 300, "worker nodes still up 5 minutes after the job"
            time.sleep(5)
        (tmp_path / "monitor.log").write_text(_monitor_log(fc))
        started, stopped = _launched(fc), _terminated(fc)
        assert stopped == sum(started.values()), (started, stopped)
        print(
            f"pipeline job from zero workers: {job_s:.0f} s; nodes started {dict(started)}, "
            f"{stopped} stopped, the last {time.monotonic() - idle_began:.0f} s after the job"
        )
        assert http_status(f"{fc.head.dashboard}/api/jobs/") == 401  # the head kept its token auth
