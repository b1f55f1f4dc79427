"""The configs ship with the package: `--config NAME` takes one by name, `drdo-ray configs` lists
and prints them, and a wheel built from this repository, installed outside it, runs the demo's
and a paper config's dry runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from drdo_ray.cli import main
from drdo_ray.config import load_config
from drdo_ray.errors import UserError
from drdo_ray.pipeline_config import PipelineConfig
from drdo_ray.shipped_configs import configs_dir, resolve_config_file, shipped_configs

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from: the repository less what is not source (a copy, so the build
# leaves no build/ or egg-info behind in the checkout, and no stale build/ gets into the wheel).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "site", "runs", "demo_run", "*.egg-info", "__pycache__", ".*_cache"
)


def test_shipped_configs_are_the_repositorys_configs_folder():
    assert configs_dir() == ROOT / "configs"  # in a checkout: the folder users edit
    assert shipped_configs() == {p.stem: p for p in sorted((ROOT / "configs").glob("*.yaml"))}
    assert {"demo-tiny-cpu", "opt-1.3b-ultrafeedback", "phi3-mini-tldr-easy"} <= set(shipped_configs())


def test_config_takes_a_path_or_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nowhere near the checkout's configs/
    shipped = ROOT / "configs" / "opt-1.3b-ultrafeedback.yaml"
    for value in (
        "opt-1.3b-ultrafeedback",
        "opt-1.3b-ultrafeedback.yaml",
        "configs/opt-1.3b-ultrafeedback.yaml",
    ):
        assert resolve_config_file(value) == shipped
    by_name = load_config(PipelineConfig, config_file="opt-1.3b-ultrafeedback", section="pipeline")
    by_path = load_config(PipelineConfig, config_file=str(shipped), section="pipeline")
    assert by_name == by_path
    # A file of the user's wins over a shipped name; another folder's path is never a shipped name.
    (tmp_path / "opt-1.3b-ultrafeedback").write_text("pipeline: {}\n")
    assert resolve_config_file("opt-1.3b-ultrafeedback") == Path("opt-1.3b-ultrafeedback")
    assert resolve_config_file("elsewhere/opt-1.3b-ultrafeedback.yaml") is None
    with pytest.raises(
        UserError, match=r"config file not found: nope \(shipped configs, by name: .*demo-tiny-cpu"
    ):
        load_config(PipelineConfig, config_file="nope", section="pipeline")


def test_configs_command_lists_and_prints(capsys):
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(shipped_configs())
    assert any(
        line.split()[0] == "opt-1.3b-ultrafeedback" and "OPT-1.3B on Ultrafeedback" in line for line in listed
    )
    assert main(["configs", "demo-tiny-cpu"]) == 0
    assert capsys.readouterr().out == (ROOT / "configs" / "demo-tiny-cpu.yaml").read_text()
    assert main(["configs", "nope"]) == 2
    assert "no shipped config 'nope'; choose one of data-tldr" in capsys.readouterr().err


def test_the_installed_wheel_runs_the_demo_and_a_paper_config_outside_the_checkout(tmp_path):
    source, wheels, venv, work = (tmp_path / name for name in ("source", "wheels", "venv", "work"))
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    pip = [sys.executable, "-m", "pip"]
    quiet = {"capture_output": True, "text": True, "timeout": 300}
    built = subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels)],
        **quiet,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("drdo_ray-*.whl")

    # A fresh venv that sees this environment's dependencies (and pip) but not its drdo-ray: a
    # plain path in a .pth file adds that site-packages without running its .pth files, where
    # the editable install of the checkout lives.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **quiet
    ).stdout.strip()
    Path(site, "reuse-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], **quiet
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "200"}

    def drdo_ray(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "drdo-ray", *args], cwd=work, env=env, **quiet)

    where = subprocess.run(
        [python, "-c", "import drdo_ray; print(drdo_ray.__file__)"], cwd=work, env=env, **quiet
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr  # not the checkout

    listed = drdo_ray("configs")
    assert listed.returncode == 0 and "opt-1.3b-ultrafeedback" in listed.stdout, listed.stderr
    assert str(Path(site, "drdo_ray", "configs")) in listed.stderr  # read from inside the package
    demo = drdo_ray("demo", "--dry-run")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "prepare:tldr_easy" in demo.stderr and "align:drdo" in demo.stderr
    paper = drdo_ray(
        "pipeline", "--config", "opt-1.3b-ultrafeedback", "--set", f"run_dir={work / 'run'}", "--dry-run"
    )
    assert paper.returncode == 0, paper.stderr[-3000:]
    assert "prepare:alpaca_eval" in paper.stderr and "align:ipo" in paper.stderr
    assert not (work / "run").exists() and not (work / "demo_run").exists()  # dry runs write nothing
