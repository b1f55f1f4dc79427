"""docs/local-cluster.md, run as written: its commands start a Ray head with token authentication
and send the pipeline to it with `ray job submit`, the way a user first tries the cluster path.
Only what must differ on a shared machine differs: free ports instead of 8265 and Ray's fixed
ports, a temporary HOME (the token file lands there, never in the real ~/.ray), a temporary
run_dir, and the head is ended by the process group its commands started in, never `ray stop`,
which would stop every Ray cluster on the machine."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from local_head import BIN, ROOT, base_env, free_port

DOC = ROOT / "docs" / "local-cluster.md"


def documented_commands() -> list[str]:
    """The page's first bash block, one command a line."""
    block = re.search(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    assert block, f"{DOC} has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def _group(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _end_group(pgid: int) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL, to every process of the group; what is left (nothing, normally)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return []
        deadline = time.monotonic() + wait
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
    return _group(pgid)


def test_the_pages_commands_are_the_ones_this_test_runs():
    commands = documented_commands()
    assert commands[0] == "source .venv/bin/activate" and commands[-1] == "ray stop"
    assert "export RAY_AUTH_MODE=token" in commands
    assert any(c.startswith("ray start --head") and "--dashboard-port 8265" in c for c in commands)
    submit = next(c for c in commands if c.startswith("ray job submit"))
    assert "--address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py" in submit


def test_a_job_whose_python_lacks_the_dependencies_says_how_to_start_the_head():
    # -S: this interpreter without its site-packages, as a head started outside the venv would run it.
    proc = subprocess.run(
        [sys.executable, "-S", "jobs/pipeline.py", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"pipeline.py: error: {sys.executable} cannot import rich, yaml, pydantic, torch, ray"
    )
    assert "source .venv/bin/activate" in line and "ray start --head" in line
    assert "source .venv/bin/activate" in DOC.read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_documented_local_cluster_runs_the_pipeline_job(tmp_path):
    commands = documented_commands()
    dashboard, run, home = free_port(), tmp_path / "run", tmp_path / "home"
    temp_dir = tempfile.mkdtemp(prefix="rlc", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    # Every port of the head, not only the dashboard's: other Ray instances on this machine (the
    # test session's own) already hold the defaults.
    head_ports = " ".join(
        f"--{flag}={free_port()}"
        for flag in (
            "port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
            "ray-client-server-port",
        )
    )

    def adapt(line: str) -> str:
        line = line.replace("source .venv/bin/activate", f"source {BIN / 'activate'}")
        line = line.replace("8265", str(dashboard)).replace("/tmp/drdo-local", str(run))
        if line.startswith("ray start --head"):
            line += f" {head_ports} --temp-dir={temp_dir} --disable-usage-stats"
        return line

    setup = [adapt(c) for c in commands if not c.startswith(("ray job submit", "ray stop"))]
    submit = adapt(next(c for c in commands if c.startswith("ray job submit")))
    env = base_env({"HOME": str(home)})  # offline, and no RAY_ADDRESS or auth setting of this shell's
    real_token = Path.home() / ".ray" / "auth_token"
    before = real_token.stat().st_mtime_ns if real_token.exists() else None

    def bash(lines: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", "set -e\n" + "\n".join(lines)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            **kw,
        )

    home.mkdir()
    head = subprocess.Popen(
        ["bash", "-c", "set -e\n" + "\n".join(setup)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the head's processes stay in this group, which ends them below
    )
    try:
        out, _ = head.communicate(timeout=240)
        assert head.returncode == 0, out[-4000:]
        assert (home / ".ray" / "auth_token").is_file()  # the documented token, in this test's HOME

        # Without RAY_AUTH_MODE=token the CLI does not send the token: the failure the page explains.
        refused = bash([setup[0], submit])
        assert refused.returncode != 0
        assert "Authentication required" in refused.stdout + refused.stderr

        # As documented. A head that has just started may not take jobs yet ("No available agent
        # to submit job, please try again later"): submit again then, nothing else.
        deadline = time.monotonic() + 120
        while True:
            job = bash([*setup[:2], submit])
            output = job.stdout + job.stderr
            if job.returncode == 0 or "No available agent" not in output or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert job.returncode == 0, output[-4000:]
        assert "[1/2] model" in output and "done  [2/2] prepare:tldr_easy in" in output
        assert (run / "data" / "tldr_easy" / "stats.json").is_file()
        assert (run / "models" / "tiny" / "config.json").is_file()
    finally:
        left = _end_group(head.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the head still running: {left}"
    after = real_token.stat().st_mtime_ns if real_token.exists() else None
    assert after == before, "the real ~/.ray/auth_token changed"
