"""Helper of the cluster tests: a Ray head started with `ray start --head --block` on free ports,
in its own process group and temp dir, ended by that group's id (never `ray stop`, which would
take every other Ray cluster on this machine with it); and the settings cluster.yaml starts its
nodes with, read from its start commands, so a local head runs with the project's own."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER_YAML = ROOT / "cluster.yaml"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}
# Ray's token sources, highest precedence first; a head or client sees only the ones a test gives.
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open while choosing, so none comes back twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (`ray start --block` stops what it started), SIGKILL if it
    lingers."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, offline, with this venv's `ray` first on PATH, no RAY_ADDRESS and no
    auth setting but the ones in ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_ENV and k != "RAY_ADDRESS"}
    env |= OFFLINE | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return env | dict(extra or {})


@dataclass(frozen=True)
class StartSettings:
    """What one of cluster.yaml's `ray start` commands runs with: its environment assignments
    (``export K=V`` or ``K=V ray start``) and its flags."""

    env: dict[str, str]
    flags: dict[str, str]


def start_settings(command: str) -> StartSettings | None:
    """The `ray start` of one shell command line (``a; b; c``), or None if it runs none."""
    env: dict[str, str] = {}
    for part in command.split(";"):
        words = shlex.split(part)
        if words[:1] == ["export"]:
            env.update(w.split("=", 1) for w in words[1:] if "=" in w)
            continue
        while words and "=" in words[0] and not words[0].startswith("-"):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words[:2] == ["ray", "start"]:
            flags = {}
            for word in words[2:]:
                key, _, value = word.partition("=")
                flags[key] = value
            return StartSettings(env, flags)
    return None


def run_script(script: str, run_dir: Path, timeout_s: float) -> dict:
    """Run tests/``script`` RUN_DIR in its own process (this session already holds a ray.init())
    and return the JSON of its ``RESULT`` line."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script), str(run_dir)],
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=os.environ | OFFLINE,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def cluster_yaml() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def node_start_settings(key: str) -> list[StartSettings]:
    """Every `ray start` in cluster.yaml's ``key`` (head_start_ray_commands, worker_start_ray_commands)."""
    found = [start_settings(c) for c in cluster_yaml()[key]]
    return [s for s in found if s is not None]


def generate_token(home: Path) -> Path:
    """`ray get-auth-token --generate`, the user's step, with HOME at ``home`` (never the real
    ~/.ray): returns the token file it wrote."""
    proc = subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"],
        env=base_env({"HOME": str(home)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = home / ".ray" / "auth_token"
    assert path.read_text() == proc.stdout.strip()
    return path


@dataclass(frozen=True)
class Head:
    proc: subprocess.Popen
    address: str  # GCS, host:port
    dashboard: str  # the Jobs API, http://host:port
    dashboard_port: int
    temp_dir: str


def http_status(url: str, headers: Mapping[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@contextmanager
def local_head(
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    flags: Sequence[str] = (),
    flags_for: Callable[[str], list[str]] | None = None,
    num_cpus: int = 4,
    dashboard_host: str = "127.0.0.1",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 120,
) -> Iterator[Head]:
    """A head with a dashboard (the Jobs API) on free ports; yields once ``GET /api/jobs/``
    answers 200 (with ``headers``, e.g. the token). ``env``: on top of ``base_env()``;
    ``flags_for(gcs_address)``: more flags, made once the GCS port is chosen."""
    dashboard_port, gcs_port, *others = free_ports(7)
    more = flags_for(f"127.0.0.1:{gcs_port}") if flags_for else []
    temp_dir = tempfile.mkdtemp(prefix="rjt", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    out = log.open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--num-cpus={num_cpus}",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            f"--dashboard-host={dashboard_host}",
            f"--dashboard-port={dashboard_port}",
            # Every fixed default port too: the test session's own Ray instance already holds
            # 52365 (the dashboard agent), and a head whose agent cannot bind takes no jobs.
            f"--dashboard-agent-listen-port={others[0]}",
            f"--dashboard-agent-grpc-port={others[1]}",
            f"--runtime-env-agent-port={others[2]}",
            f"--metrics-export-port={others[3]}",
            f"--ray-client-server-port={others[4]}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            *flags,
            *more,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=base_env(env),
        start_new_session=True,
    )
    try:
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if http_status(f"{dashboard}/api/jobs/", headers) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the Jobs API did not answer in {timeout_s:g} s"
            time.sleep(1)
        yield Head(proc, f"127.0.0.1:{gcs_port}", dashboard, dashboard_port, temp_dir)
    finally:
        stop_group(proc)
        out.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
