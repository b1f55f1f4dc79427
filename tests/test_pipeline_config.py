"""`drdo-ray pipeline`: every shipped pipeline config builds a valid config for every stage (no
network, nothing runs); bad references fail before anything runs; stage selection, skipping,
--force and stale-output reruns, with the stage actions replaced by recorders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drdo_ray import pipeline
from drdo_ray.cli import main
from drdo_ray.config import GenerateConfig, TrainConfig, load_config
from drdo_ray.errors import UserError
from drdo_ray.pipeline import plan, run_pipeline, select
from drdo_ray.pipeline_config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_CONFIGS = sorted(
    p.name for p in (ROOT / "configs").glob("*.yaml") if "pipeline" in (yaml.safe_load(p.read_text()) or {})
)
PAPER_CONFIGS = [f"opt-{s}-ultrafeedback.yaml" for s in ("125m", "350m", "1.3b", "2.7b")] + [
    f"phi3-mini-tldr-{s}.yaml" for s in ("easy", "hard", "full")
]


def _load(name: str, *overrides: str) -> PipelineConfig:
    return load_config(
        PipelineConfig,
        config_file=str(ROOT / "configs" / name),
        section="pipeline",
        overrides=list(overrides),
    )


def test_every_paper_experiment_ships_a_pipeline_config():
    assert set(PAPER_CONFIGS) | {"demo-tiny-cpu.yaml"} <= set(PIPELINE_CONFIGS)


@pytest.mark.parametrize("name", PIPELINE_CONFIGS)
def test_shipped_pipeline_config_builds_every_stage(name):
    cfg = _load(name)
    steps = plan(cfg)  # validates each stage's config with its own class
    groups = {s.group for s in steps}
    run = cfg.run_dir.rstrip("/")
    for s in steps:
        assert s.output.startswith(run + "/"), (s.id, s.output)  # every artifact under the run directory
        for need in s.needs:
            assert [x.id for x in steps].index(need) < steps.index(s)  # inputs are produced earlier
    trains = [s.config for s in steps if isinstance(s.config, TrainConfig)]
    # A round's training writes under its round: RUN/rounds/<k>/train, models.
    assert all(t.run_dir == run or t.run_dir.startswith(f"{run}/rounds/") for t in trains)
    align = {t.loss for t in trains if t.stage == "align"}
    if cfg.online is not None:  # the online demo: SFT, the Oracle, then rounds of DRDO and DPO
        assert {"prepare", "sft", "oracle", "online", "report"} <= groups and {"drdo", "dpo"} <= align
        return
    assert {
        "prepare",
        "sft",
        "oracle",
        "edpo_oracles",
        "score",
        "align",
        "generate",
        "winrate",
        "judge",
        "report",
    } <= groups
    assert all(t.run_dir == run for t in trains)
    assert {"drdo", "dpo", "edpo"} <= align
    edpo = next(s for s in steps if s.id == "align:edpo")
    assert edpo.config.data.endswith("_edpo") and "score:" + edpo.config.data.rsplit("/", 1)[1] in edpo.needs


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_carry_table_5(name):
    cfg = _load(name)
    assert cfg.run_dir.startswith("s3://YOUR-BUCKET/")
    steps = {s.id: s.config for s in plan(cfg)}
    model = (
        "microsoft/Phi-3-mini-4k-instruct"
        if name.startswith("phi3")
        else f"facebook/{name.split('-ultra')[0]}"
    )
    assert steps["sft"].model == model
    for sid, cfg_ in steps.items():
        if isinstance(cfg_, TrainConfig):
            assert (
                cfg_.micro_batch_size * cfg_.grad_accum * cfg_.num_workers == cfg_.global_batch_size == 64
            ), sid
            assert cfg_.grad_accum == 4 and cfg_.use_gpu and cfg_.bf16
            # DDP where the states fit one GPU (measured faster); ZeRO-2 for 2.7B and Phi-3.
            large = name.startswith(("phi3", "opt-2.7b"))
            assert cfg_.deepspeed.enabled == large and (not large or cfg_.deepspeed.zero_stage == 2), sid
            assert cfg_.weight_decay == 0.05 and cfg_.gradient_checkpointing
    assert (steps["sft"].lr, steps["sft"].warmup_steps) == (1e-5, 100)
    assert (steps["oracle"].lr, steps["oracle"].oracle_alpha, steps["oracle"].epochs) == (1e-5, 0.01, 1)
    assert [steps[f"edpo_oracles:{k}"].head_seed for k in range(3)] == [0, 1, 2]
    assert "edpo_oracles:3" not in steps
    # The paper's settings for the main Oracle; its e-DPO Oracles are plain Bradley-Terry.
    assert [steps[f"edpo_oracles:{k}"].oracle_alpha for k in range(3)] == [0.0] * 3
    drdo = steps["align:drdo"]
    assert (drdo.lr, drdo.max_steps, drdo.alpha, drdo.gamma) == (5e-6, 1000, 0.1, 2.0)
    assert steps["align:dpo"].beta == 0.1
    generations = [c for c in steps.values() if isinstance(c, GenerateConfig)]
    assert generations and all(
        (g.temperatures, g.top_p, g.max_new_tokens) == ([0.2, 0.5, 0.7, 0.9], 0.8, 256) for g in generations
    )
    prompts = {g.prompts.rsplit("/", 1)[1] for g in generations}
    assert prompts == (
        {"tldr_test", "cnn_dailymail"} if name.startswith("phi3") else {"alpaca_eval", "ultrafeedback_test"}
    )
    for sid, c in steps.items():
        if sid.startswith("prepare:") and c.source in ("ultrafeedback", "tldr"):
            assert (c.max_prompt_length, c.max_length) == (512, 1024), sid
    if name.startswith("phi3"):
        split = name.removesuffix(".yaml").rsplit("-", 1)[1]
        assert steps["align:drdo"].data.endswith(f"/scored/tldr_{split}")
        assert steps[f"prepare:tldr_{split}"].tldr_split == split


def _write(tmp_path: Path, body: dict) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"pipeline": body}))
    return str(path)


BASE = {
    "run_dir": "RUN",
    "base_model": "org/model",
    "datasets": {
        "prefs": {"source": "tldr", "input": "sample"},
        "sft_data": {"source": "tldr_sft", "input": "sample"},
    },
    "sft": {"data": "sft_data"},
    "oracle": {"data": "prefs"},
    "score": {"data": "prefs"},
    "align": {"runs": ["drdo"]},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sft": {"data": "nope"}}, "sft.data: nope is not one of the datasets: prefs, sft_data"),
        ({"sft": {"lr": 1e-5}}, "sft.data: name the dataset"),
        (
            {"align": {"runs": ["edpo"]}},
            "align.runs.edpo: alignment reads scored data; add a score section and edpo_oracles: K",
        ),
        ({"align": {"runs": ["bogus"]}}, "align.runs.bogus: invalid TrainConfig: loss"),  # when planned
        ({"align": {"runs": []}}, "align.runs: name the runs"),
        ({"score": None}, "align.runs.drdo: alignment reads scored data"),
        ({"oracle": None}, "score: scoring needs the oracle stage"),
        (
            {"generate": {"prompts": ["prefs"], "policies": ["align-dpo"]}},
            "generate.policies: align-dpo is not one of the policies: sft, align-drdo",
        ),
        ({"generate": {"prompts": ["nope"]}}, "generate.prompts: nope is not one of the datasets"),
        (
            {"winrate": {"a": "align-drdo"}},
            "winrate.a: align-drdo is not one of the generated policies: (none)",
        ),
        (
            {"generate": {"prompts": ["prefs"]}, "judge": {"against": ["align-dpo"]}},
            "judge.against: align-dpo is not one of the generated policies (or reference)",
        ),
        (
            {"generate": {"prompts": ["prefs"]}, "kl": {"prompts": "sft_data"}},
            "kl.prompts: sft_data is not one",
        ),
        ({"sft": None, "generate": {"prompts": ["prefs"]}, "kl": {}}, "kl: KL is measured against the SFT"),
    ],
)
def test_bad_references_fail_when_the_config_loads(tmp_path, change, message):
    # Checked by PipelineConfig itself (every problem in one line), before any plan is made; a run
    # named after no loss fails when its TrainConfig is built, still before anything runs.
    with pytest.raises(UserError, match=r"^invalid PipelineConfig: |^pipeline\.") as err:
        plan(load_config(PipelineConfig, config_file=_write(tmp_path, BASE | change), section="pipeline"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_reference_problem_is_listed_at_once():
    with pytest.raises(ValidationError) as err:
        PipelineConfig.model_validate(BASE | {"sft": {"data": "x"}, "score": {"data": "y"}})
    text = str(err.value)
    assert "sft.data: x is not one" in text and "score.data: y is not one" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sft": {"data": "sft_data", "lrr": 1e-5}}, "sft.lrr: Extra inputs are not permitted"),
        ({"train": {"deepspeed": {"zero": 2}}}, "train.deepspeed.zero: Extra inputs are not permitted"),
        (
            {"score": {"data": "prefs", "batch_size": "big"}},
            "score.batch_size: Input should be a valid integer",
        ),
        ({"align": {"runs": {"drdo": {"lr": -1}}}}, "align.runs.drdo.lr: Input should be greater than 0"),
        ({"align": {"runs": {"drdo": {"gama": 2}}}}, "align.runs.drdo.gama: Extra inputs are not permitted"),
        (
            {"generate": {"prompts": ["prefs"], "top_p": "high"}},
            "generate.top_p: Input should be a valid number",
        ),
        ({"generate": {"prompts": [1]}}, "generate.prompts.0: Input should be a valid string"),
        (
            {"datasets": {"prefs": {"source": "reddit", "input": "x"}}},
            "datasets.prefs.source: Input should be",
        ),
        ({"sft": {"data": "sft_data", "run_dir": "x"}}, "sft: run_dir is set by the pipeline"),
        ({"winrate": {"oracle": "x"}}, "winrate: oracle is set by the pipeline"),
        ({"kl": {"bacth_size": 4}}, "kl.bacth_size: Extra inputs are not permitted"),
        ({"report": {"titel": "x"}}, "report.titel: Extra inputs are not permitted"),
    ],
)
def test_section_typos_and_wrong_types_name_the_section(tmp_path, change, message):
    # Each section is a typed model: the YAML fails to load, one line, before any plan is made.
    with pytest.raises(UserError, match=r"^invalid PipelineConfig: ") as err:
        load_config(PipelineConfig, config_file=_write(tmp_path, BASE | change), section="pipeline")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sections_keep_only_the_keys_they_set():
    # A section's own defaults must not hide the shared train keys (defaults < train < stage).
    cfg = PipelineConfig.model_validate(BASE | {"train": {"lr": 3e-5, "deepspeed": {"enabled": True}}})
    steps = {s.id: s.config for s in plan(cfg)}
    assert steps["sft"].lr == steps["align:drdo"].lr == 3e-5 and steps["sft"].deepspeed.enabled


def test_stage_selection_by_group_or_id():
    steps = plan(PipelineConfig.model_validate(BASE | {"align": {"runs": ["drdo", "dpo"]}}))
    assert [s.id for s in select(steps, ["align"])] == ["align:drdo", "align:dpo"]
    assert [s.id for s in select(steps, ["align:dpo", "sft"])] == [
        "sft",
        "align:dpo",
    ]  # run order, not given order
    assert steps[-1].id == "report" and steps[-1].marker is None  # the report always reruns
    with pytest.raises(UserError, match="unknown stage algin"):
        select(steps, ["algin"])


def test_a_stage_whose_inputs_are_missing_is_refused(tmp_path):
    cfg = PipelineConfig.model_validate(BASE | {"run_dir": str(tmp_path / "run")})
    with pytest.raises(UserError, match=r"stage align:drdo reads the outputs of sft, score:prefs"):
        run_pipeline(cfg, stages=["align"])
    assert not (tmp_path / "run").exists()  # refused before anything ran or was written


@pytest.fixture
def recorded(monkeypatch):
    """Replace the model and prepare actions by recorders that write the stages' markers."""
    calls: list[str] = []

    def tiny(cfg, console):
        calls.append("model")
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "config.json").write_text("{}")

    def prepare(cfg, console):
        calls.append(f"prepare:{Path(cfg.out).name}:{cfg.tokenizer}")
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "stats.json").write_text(json.dumps({"force": getattr(cfg, "force", None)}))

    monkeypatch.setattr(pipeline, "_build_tiny", tiny)
    monkeypatch.setattr(pipeline, "_prepare", prepare)
    return calls


def test_skip_force_and_stale_reruns(tmp_path, recorded, capsys):
    run = tmp_path / "run"
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": str(run),
            "tiny_model": {},
            "report": None,
            "datasets": {
                "a": {"source": "tldr", "input": "sample"},
                "b": {"source": "cnn_dailymail", "input": "sample"},
            },
        }
    )
    tiny = str(run / "models" / "tiny")
    first = run_pipeline(cfg)
    assert recorded == [
        "model",
        f"prepare:a:{tiny}",
        f"prepare:b:{tiny}",
    ]  # tokenizer defaults to the tiny model
    assert {k: v["status"] for k, v in first["stages"].items()} == dict.fromkeys(
        ["model", "prepare:a", "prepare:b"], "done"
    )
    err = capsys.readouterr().err
    assert "[1/3] model" in err and "done  [3/3] prepare:b in" in err

    recorded.clear()
    second = run_pipeline(cfg)  # everything exists: nothing runs
    assert recorded == []
    assert all(v["status"] == "skipped: outputs exist" for v in second["stages"].values())

    run_pipeline(cfg, stages=["prepare:b"], force=True)  # only the selected stage reruns
    assert recorded == [f"prepare:b:{tiny}"]

    recorded.clear()
    run_pipeline(cfg, stages=["model", "prepare"], force=False)  # nothing changed
    assert recorded == []
    (run / "models" / "tiny" / "config.json").unlink()  # the model is gone: it and what read it rerun
    run_pipeline(cfg)
    assert recorded == ["model", f"prepare:a:{tiny}", f"prepare:b:{tiny}"]
    status = json.loads((run / "pipeline.json").read_text())
    assert status["stages"]["prepare:a"]["status"] == "done" and status["run_dir"] == str(run)


def test_a_failed_stage_is_recorded_and_the_rerun_resumes(tmp_path, recorded, monkeypatch):
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": str(tmp_path),
            "tiny_model": {},
            "report": None,
            "datasets": {"a": {"source": "tldr", "input": "sample"}},
        }
    )

    def broken(cfg, console):
        raise UserError("hub unreachable")

    real = pipeline._prepare
    monkeypatch.setattr(pipeline, "_prepare", broken)
    with pytest.raises(UserError, match="hub unreachable"):
        run_pipeline(cfg)
    status = json.loads((tmp_path / "pipeline.json").read_text())["stages"]
    assert status["model"]["status"] == "done"
    assert (status["prepare:a"]["status"], status["prepare:a"]["error"]) == ("failed", "hub unreachable")
    monkeypatch.setattr(pipeline, "_prepare", real)
    recorded.clear()
    run_pipeline(cfg)
    assert recorded == [f"prepare:a:{tmp_path}/models/tiny"]  # the model is not rebuilt


def test_cli_dry_run_and_errors(tmp_path, capsys):
    code = main(
        [
            "pipeline",
            "--config",
            str(ROOT / "configs" / "opt-1.3b-ultrafeedback.yaml"),
            "--dry-run",
            "--set",
            f"run_dir={tmp_path}",
            "--stages",
            "sft,align:drdo",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path)
    assert "blocked: needs" in captured.err and "models/sft" in captured.err
    assert main(["pipeline"]) == 2
    assert "pipeline needs --config" in capsys.readouterr().err
    assert main(["pipeline", "--config", _write(tmp_path, BASE | {"sft": {"data": "x"}})]) == 2
    assert "sft.data: x is not one of the datasets" in capsys.readouterr().err


def test_pipeline_job_entry_point_runs_outside_the_package():
    result = subprocess.run(
        [sys.executable, "jobs/pipeline.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--stages" in result.stdout and "--dry-run" in result.stdout


def test_status_file_never_holds_an_api_key():
    config = {
        "generate": {"api_key": "sk-secret", "backend": "http"},
        "judge": [{"api_key": "k"}],
        "api_key": None,
    }
    assert pipeline._redacted(config) == {
        "generate": {"api_key": "<redacted>", "backend": "http"},
        "judge": [{"api_key": "<redacted>"}],
        "api_key": None,
    }
