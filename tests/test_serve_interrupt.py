"""Ctrl-C of `drdo-ray serve --backend vllm` takes the vLLM engine with it: the replica's
``__del__`` shuts the engine's processes down when Serve stops it, so none is left 10 s after
the interrupt. The command runs in a process group of its own (its local Ray cluster joins
it; Ray's workers run in groups of their own, so the test finds its engine processes by their
parent links, apart from any other vLLM on this machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_head import base_env

BIN = Path(sys.executable).parent


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process on this machine."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in table.splitlines() if line.strip()]
    return {int(r[0]): (int(r[1]), r[2], r[3] if len(r) > 3 else "") for r in rows}


def _engines_under(root: int) -> set[int]:
    """vLLM's engine processes (EngineCore, its workers) among ``root``'s descendants: Ray's
    workers run in process groups of their own, so the parent links are what ties them here."""
    procs = _processes()
    mine, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return {pid for pid in mine if "VLLM::" in procs[pid][2]}


def _running(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie has exited; its parent has not reaped it yet)."""
    procs = _processes()
    return {pid for pid in pids if pid in procs and "Z" not in procs[pid][1]}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_leaves_no_engine_process(vllm_model_dir, tmp_path):
    engine = "{enforce_eager: true, kv_cache_memory_bytes: 268435456, max_model_len: 512}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "drdo-ray"),
            "serve",
            "--model",
            str(vllm_model_dir),
            "--backend",
            "vllm",
            "--port",
            "0",
            "--set",
            f"engine_kwargs={engine}",
            "--startup-timeout",
            "400",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=base_env({"RAY_AUTH_MODE": "disabled"}),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        # The URL is the one stdout line that is the command's own (Ray forwards worker logs there too).
        while not (line := proc.stdout.readline()).startswith("http"):
            assert line, (tmp_path / "serve.log").read_text()[-3000:]
        engines = _engines_under(proc.pid)
        assert engines, "no vLLM engine process to stop"

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
        interrupted = time.monotonic()
        # By pid: an engine orphaned by its replica's death would no longer be a descendant.
        while (left := _running(engines)) and time.monotonic() - interrupted < 10:
            time.sleep(0.25)
        gone_after = time.monotonic() - interrupted
        assert not left, f"engine processes still running 10 s after Ctrl-C: {left}"
        assert proc.wait(timeout=60) == 0
        print(f"engine processes gone {gone_after:.1f} s after Ctrl-C")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
