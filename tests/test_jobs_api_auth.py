"""The Jobs API runs any code it is sent, so cluster.yaml locks it: Ray's token authentication on
every node (RAY_AUTH_MODE=token, with the token the user generates, shipped by the launcher from
~/.ray/auth_token and never part of the checkout) and the dashboard on the head's loopback only.
A head started here with those settings refuses every request without the token and takes a
job from `ray job submit` with it. Tokens live in temp dirs: nothing reads or writes ~/.ray."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
from local_head import (
    BIN,
    ROOT,
    base_env,
    cluster_yaml,
    generate_token,
    http_status,
    local_head,
    node_start_settings,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def test_cluster_yaml_turns_on_token_auth_and_keeps_the_dashboard_on_loopback():
    heads = node_start_settings("head_start_ray_commands")
    workers = node_start_settings("worker_start_ray_commands")
    assert len(heads) == 1 and len(workers) == 1
    # Every node's Ray requires the token: a worker without it could not even join.
    assert [s.env.get("RAY_AUTH_MODE") for s in heads + workers] == ["token", "token"]
    # The dashboard (and its Jobs API) on the head's loopback, reached through `ray dashboard`.
    assert heads[0].flags["--dashboard-host"] in LOOPBACK
    assert "--head" in heads[0].flags and "--head" not in workers[0].flags

    # The launcher ships the user's token from their home to the same place on every node,
    # where Ray looks by default; never from the checkout.
    mounts = cluster_yaml()["file_mounts"]
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"
    # A token copied into the checkout is neither committed nor uploaded with --working-dir.
    for ignore in (".gitignore", ".rayignore"):
        assert "auth_token" in (ROOT / ignore).read_text().split(), ignore
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0:
        assert not [p for p in tracked.stdout.split() if p.endswith("auth_token")]


def _other_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _submit(dashboard: str, env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--", "python", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_jobs_api_refuses_requests_without_the_token(tmp_path):
    # The user's step, with HOME in a temp dir: `ray get-auth-token --generate`.
    token_file = generate_token(tmp_path / "home")
    token = token_file.read_text()
    bearer = {"Authorization": f"Bearer {token}"}
    # The head with cluster.yaml's own settings; the token found through RAY_AUTH_TOKEN_PATH.
    head_settings = node_start_settings("head_start_ray_commands")[0]
    env = head_settings.env | {"RAY_AUTH_TOKEN_PATH": str(token_file)}
    host = head_settings.flags["--dashboard-host"]
    with local_head(tmp_path / "head.log", env=env, dashboard_host=host, headers=bearer) as head:
        jobs = f"{head.dashboard}/api/jobs/"
        marker = tmp_path / "ran"
        # No token: 401; a wrong one: 403. Reading and submitting alike.
        assert http_status(jobs) == 401
        assert http_status(jobs, {"Authorization": "Bearer not-the-token"}) == 403
        submission = json.dumps({"entrypoint": f"touch {marker}"}).encode()
        json_type = {"Content-Type": "application/json"}
        assert http_status(jobs, json_type, submission) == 401
        assert http_status(jobs, json_type | {"Authorization": "Bearer x"}, submission) == 403

        # The CLI without the token (an empty home, no RAY_AUTH_*) is refused, and says why.
        bare = base_env({"HOME": str(tmp_path / "empty-home")})
        refused = _submit(head.dashboard, bare, f"open({str(marker)!r}, 'w')")
        assert refused.returncode != 0
        assert "Authentication required" in refused.stdout + refused.stderr

        # With RAY_AUTH_MODE=token and the token, as the README says, the job runs.
        client = base_env({"HOME": str(tmp_path / "empty-home"), "RAY_AUTH_MODE": "token"})
        client["RAY_AUTH_TOKEN_PATH"] = str(token_file)
        accepted = _submit(head.dashboard, client, "print('ran with the token')")
        assert accepted.returncode == 0, accepted.stderr[-3000:]
        assert "ran with the token" in accepted.stdout
        assert "succeeded" in accepted.stdout

        # Only the authenticated job exists: the refused ones never ran.
        time.sleep(1)
        assert not marker.exists()
        listed = subprocess.run(
            [str(BIN / "ray"), "job", "list", "--address", head.dashboard],
            env=client,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and listed.stdout.count("entrypoint=") == 1, listed.stdout

        # The dashboard port answers on loopback only.
        other = _other_address()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, head.dashboard_port), timeout=5):
                pass
