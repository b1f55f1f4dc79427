"""Typed configs (YAML sections, flags, --set precedence), the job entry points, the tiny
model CLI, and the cluster launcher config checked by Ray's own validator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drdo_ray.cli import main
from drdo_ray.config import PrepareConfig, load_config
from drdo_ray.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_section_then_flags_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "tldr", "input": "a", "out": "o", "max_length": 900}}))
    cfg = load_config(
        PrepareConfig,
        config_file=str(path),
        section="data",
        flags={"input": "b", "max_length": None},
        overrides=["max_length=2048", "tldr_split=hard"],
    )
    assert (cfg.source, cfg.input, cfg.out, cfg.max_length, cfg.tldr_split) == (
        "tldr",
        "b",
        "o",
        2048,
        "hard",
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["max_length=-1"], "max_length"),
        (["source=reddit"], "source"),
        (["bogus=1"], "bogus"),
        (["novalue"], "key=value"),
    ],
)
def test_invalid_settings_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(PrepareConfig, flags={"source": "tldr", "input": "x", "out": "y"}, overrides=overrides)


def test_missing_config_file_is_a_user_error():
    with pytest.raises(UserError, match="config file not found"):
        load_config(PrepareConfig, config_file="/no/such.yaml")


@pytest.mark.parametrize("name", ["data-tldr.yaml", "data-ultrafeedback.yaml", "tiny-cpu.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(PrepareConfig, config_file=str(ROOT / "configs" / name), section="data")
    assert cfg.max_prompt_length < cfg.max_length


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)  # raises on any schema violation
    types = config["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert all(types[t]["resources"]["GPU"] >= 1 for t in ("gpu_train", "gpu_serve"))
    assert "2.60.0" in config["docker"]["image"]


def test_job_entry_point_runs_outside_the_package(tmp_path):
    # As `ray job submit --working-dir .` runs it: `python jobs/prepare.py` from the repo root.
    result = subprocess.run(
        [sys.executable, "jobs/prepare.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--tldr-split" in result.stdout


def test_models_tiny_cli_writes_a_loadable_folder(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["models", "tiny", "--out", str(tmp_path / "m"), "--arch", "opt", "--hidden-size", "32"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert model.config.model_type == "opt" and model.config.hidden_size == 32
    assert model.get_input_embeddings().num_embeddings >= len(tok)


@pytest.mark.parametrize("name", ["train-tiny-cpu.yaml", "train-opt-1.3b-ultrafeedback.yaml"])
@pytest.mark.parametrize("stage", ["sft", "oracle", "align"])
def test_shipped_training_configs_validate(name, stage):
    from drdo_ray.config import TrainConfig

    cfg = load_config(
        TrainConfig,
        config_file=str(ROOT / "configs" / name),
        section=stage,
        flags={"stage": stage},
        overrides=["loss=drdo"] if stage == "align" else [],
    )
    assert cfg.stage == stage and cfg.max_steps != 0
    if cfg.global_batch_size is not None:  # the paper's effective batch of 64
        assert cfg.micro_batch_size * cfg.grad_accum * cfg.num_workers == cfg.global_batch_size
