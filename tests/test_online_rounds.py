"""Online rounds for real (Ray Data, Ray Train, the transformers and vLLM engines), one round on
the tiny model: each method samples, the Oracle scores, pairs are built and prepared, each method
trains and is compared with SFT on held-out prompts; the report shows it; a rerun skips the
finished round; a job killed inside a round resumes it to the same pairs and the same model; a
round on vLLM (CPU build).

The start policy is the tiny model; the Oracle is that LM with an untrained reward head (its
rewards still differ between samples, which is all a round needs; Oracle training is tested in
test_training.py). Both are made once and copied into each test's run directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from ray_checkpoints import registered_checkpoint
from safetensors.torch import load_file

from drdo_ray.config import load_config
from drdo_ray.pipeline import run_pipeline
from drdo_ray.pipeline_config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_PER_ROUND, SAMPLES, HELDOUT = 4, 2, 3
STEPS = 3  # of training, each round
# Ray Train's controller collects a worker's report every this many seconds (Ray's default: 2),
# and a worker's report waits until the one before it was collected.
REPORT_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def _config(run: Path, **online) -> dict:
    sample = ROOT / "drdo_ray" / "data" / "samples" / "tldr_sft.jsonl"
    return {
        "run_dir": str(run),
        "tiny_model": {"seed": 0, "hidden_size": 128},  # head size 32: vLLM's CPU kernels take it
        "datasets": {
            # vLLM's test engines hold 512 tokens: prompt and the samples' 8 new tokens fit.
            "prompts": {
                "source": "tldr_sft",
                "input": str(sample),
                "max_prompt_length": 400,
                "max_length": 512,
            },
        },
        # One pair a step and fewer steps than pairs (a pair per prompt): one pass over the data,
        # each pass being a Ray Data execution of its own. A checkpoint every step: the killed
        # job resumes from one and trains on.
        "train": {
            "num_workers": 1,
            "micro_batch_size": 1,
            "max_steps": STEPS,
            "checkpoint_every": 1,
            "weight_decay": 0.0,
        },
        "oracle": {"data": "prompts"},  # made by the fixture, never trained here
        "online": {
            "rounds": 1,
            "prompts": "prompts",
            "prompts_per_round": PROMPTS_PER_ROUND,
            "samples_per_prompt": SAMPLES,
            "max_new_tokens": 8,
            "heldout": "prompts",
            "heldout_prompts": HELDOUT,
            "methods": ["drdo", "dpo"],
            "backend": "transformers",
            "batch_size": 8,
            "train": {"lr": 5e-4},
        }
        | online,
        "report": {},
    }


def _pipeline(run: Path, **online) -> PipelineConfig:
    return PipelineConfig.model_validate(_config(run, **online))


ONLINE = ["online", "report"]  # the stages a test runs: the start's are copied in


@pytest.fixture(scope="module", autouse=True)
def _collect_reports_often(ray_session):
    """Reports collected every 0.5 s in this module's training runs, whose steps take 0.1 s: at 2 s
    each checkpoint would cost up to 2 s, and the end of a run up to 4 more. Set once the cluster
    runs, it reaches only the runs started here (the driver passes it on to Ray Train's controller)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(REPORT_INTERVAL, "0.5")
        yield


@pytest.fixture(scope="module")
def start(tmp_path_factory, ray_session) -> Path:
    """A run directory holding the tiny start policy, the prompts and the Oracle."""
    from transformers import AutoTokenizer

    from drdo_ray.models import PolicyWithRewardHead

    run = tmp_path_factory.mktemp("online") / "start"
    run_pipeline(_pipeline(run), stages=["model", "prepare"])
    tiny = run / "models" / "tiny"
    oracle = PolicyWithRewardHead.from_pretrained(str(tiny), head_seed=0)
    oracle.save_pretrained(run / "models" / "oracle", tokenizer=AutoTokenizer.from_pretrained(str(tiny)))
    return run


def _copy(start: Path, run: Path) -> Path:
    shutil.copytree(start, run, ignore=shutil.ignore_patterns("pipeline.json"))
    return run


@pytest.fixture(scope="module")
def uninterrupted(start, tmp_path_factory) -> dict:
    run = _copy(start, tmp_path_factory.mktemp("online") / "uninterrupted")
    result = run_pipeline(_pipeline(run), stages=ONLINE)
    return {"run": run, "result": result}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_a_round_samples_scores_pairs_trains_and_evaluates_each_method(uninterrupted, start):
    run = uninterrupted["run"]
    r1 = run / "rounds" / "1"
    assert all(v["status"] == "done" for v in uninterrupted["result"]["stages"].values())
    for method in ("drdo", "dpo"):
        generation = json.loads(
            (r1 / "samples" / "round" / f"align-{method}" / "generation.json").read_text()
        )
        # The round's window comes after the held-out prompts of the same dataset.
        assert (generation["offset"], generation["limit"], generation["rows"]) == (
            HELDOUT,
            PROMPTS_PER_ROUND,
            PROMPTS_PER_ROUND * SAMPLES,
        )
        scores = {
            (r["prompt_id"], r["sample_idx"]): r for r in _jsonl(r1 / "pairs" / method / "scores.jsonl")
        }
        assert len(scores) == PROMPTS_PER_ROUND * SAMPLES
        pairs = _jsonl(r1 / "pairs" / method / "pairs.jsonl")
        summary = json.loads((r1 / "pairs" / method / "pairs.json").read_text())
        assert len(pairs) == summary["pairs"] > 0 and summary["prompts"] == PROMPTS_PER_ROUND
        assert (
            summary["pairs"] + sum(summary["skipped"].values()) == PROMPTS_PER_ROUND
        )  # every prompt counted
        for p in pairs:  # best vs worst by the Oracle's reward of each sample
            chosen, rejected = (
                scores[(p["prompt_id"], p["chosen_idx"])],
                scores[(p["prompt_id"], p["rejected_idx"])],
            )
            assert (p["chosen"], p["rejected"]) == (chosen["text"], rejected["text"])
            assert p["score_chosen"] == chosen["reward"] > rejected["reward"] == p["score_rejected"]
        # The pairs were prepared and scored like any training data: the pair scorer's rewards
        # agree with the sample scorer's, and only the DPO family carries reference log-probs.
        scored = pq.read_table(r1 / "scored" / f"pairs-{method}" / "data").to_pylist()
        assert len(scored) == len(pairs)
        for row in scored:
            assert row["oracle_chosen"] == pytest.approx(row["score_chosen"], abs=1e-4)
            assert row["oracle_rejected"] == pytest.approx(row["score_rejected"], abs=1e-4)
        assert ("ref_chosen_logps" in scored[0]) == (method == "dpo")
        # It trained from the start policy, and the held-out win rate against SFT was taken.
        trained, tiny = _weights(r1 / "models" / f"align-{method}"), _weights(start / "models" / "tiny")
        assert any(not torch.equal(trained[k], tiny[k]) for k in tiny)
        winrate = json.loads(
            (r1 / "eval" / "heldout" / f"winrate-align-{method}-vs-sft" / "winrate.json").read_text()
        )
        assert winrate["n"] == HELDOUT and (winrate["a"]["name"], winrate["b"]["name"]) == (
            f"{method} round-1",
            "sft",
        )
    record = json.loads((r1 / "round.json").read_text())
    drdo = record["methods"]["drdo"]
    assert (drdo["staleness"], drdo["sampled_by"]["round"], drdo["reference"]) == (0, 0, None)
    assert record["methods"]["dpo"]["reference"]["path"] == str(run / "models" / "tiny")
    assert drdo["sample_rewards"]["n"] == PROMPTS_PER_ROUND * SAMPLES
    report = (run / "report" / "report.md").read_text()
    assert "## Online rounds" in report and "| 1 | dpo | 0 | 0 |" in report
    for figure in ("online_winrate_vs_round.png", "online_sample_rewards.png"):
        assert (run / "report" / "figures" / figure).stat().st_size > 0


@pytest.mark.slow
def test_a_rerun_skips_the_finished_round(uninterrupted):
    run = uninterrupted["run"]
    # Nothing under the round is written again: its record, samples, pairs, models, win rates.
    written = {p: p.stat().st_mtime_ns for p in (run / "rounds" / "1").rglob("*") if p.is_file()}
    again = run_pipeline(_pipeline(run), stages=ONLINE)
    online = {k: v["status"] for k, v in again["stages"].items() if k.startswith("online:")}
    assert set(online.values()) == {"skipped: outputs exist"} and len(online) == 14
    assert {p: p.stat().st_mtime_ns for p in (run / "rounds" / "1").rglob("*") if p.is_file()} == written


def _kill_tree(job: subprocess.Popen) -> None:
    """SIGKILL the job and every process under it, all at once: the Ray cluster it started runs
    its workers in process groups of their own, which would go on training (and export the model)
    for seconds after the job's group died."""
    try:
        job_process = psutil.Process(job.pid)
        tree = [job_process, *job_process.children(recursive=True)]
    except psutil.NoSuchProcess:  # it ended by itself (what the test checks next)
        tree = []
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    job.wait()


@pytest.mark.slow
def test_a_job_killed_inside_a_round_resumes_it_to_the_same_pairs_and_model(start, uninterrupted, tmp_path):
    run = _copy(start, tmp_path / "killed")
    config = tmp_path / "online.yaml"
    config.write_text(yaml.safe_dump({"pipeline": _config(run, methods=["drdo"])}))
    # The round up to its training, what the comparison reads (its evaluation is tested above).
    stages = [f"online:1:{step}:drdo" for step in ("sample", "pairs", "score", "train")]
    command = [sys.executable, "-m", "drdo_ray.cli", "pipeline", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local cluster of its own
    # When its first checkpoint is registered, the worker goes on to its third step, whose report
    # waits for the next collection, this long after, before the model is exported: the time the
    # test has to kill the job inside the round.
    env[REPORT_INTERVAL] = "4"
    job = subprocess.Popen(
        [*command, "--stages", ",".join(stages)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    train_dir = run / "rounds" / "1" / "train" / "align-drdo"
    try:
        deadline = time.monotonic() + 600
        while registered_checkpoint(train_dir) is None and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        _kill_tree(job)
    registered = registered_checkpoint(train_dir)
    assert registered is not None, "the job ended before its round's first checkpoint"
    assert not (run / "rounds" / "1" / "models" / "align-drdo" / "config.json").exists()  # killed mid-round
    resumed_from = int(registered.removeprefix("step_"))
    logged = (train_dir / "metrics.jsonl").read_text().splitlines()[:resumed_from]

    cfg = load_config(PipelineConfig, config_file=str(config), section="pipeline")
    status = {k: v["status"] for k, v in run_pipeline(cfg, stages=stages)["stages"].items()}
    assert (
        status["online:1:pairs:drdo"] == "skipped: outputs exist" and status["online:1:train:drdo"] == "done"
    )
    metrics = (train_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in metrics] == list(range(1, STEPS + 1))  # every step logged once
    # Resumed from that checkpoint: the steps up to it were not trained again (their rows, timings
    # included, are the killed job's).
    assert 0 < resumed_from < STEPS and metrics[:resumed_from] == logged
    # The same pairs, exactly, and the same model within float noise as the run never killed.
    clean, resumed = uninterrupted["run"] / "rounds" / "1", run / "rounds" / "1"
    pairs = "pairs/drdo/pairs.jsonl"
    assert (resumed / pairs).read_text() == (clean / pairs).read_text()
    a, b = _weights(clean / "models" / "align-drdo"), _weights(resumed / "models" / "align-drdo")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_round_on_the_vllm_engine(start, tmp_path, vllm_engine_kwargs, vllm_model_dir):
    """The round's policy samples through vLLM (CPU build), then pairs, scores, trains and records.
    No held-out prompts: their sampling is the same generate stage (its vLLM path is covered by
    test_vllm_generate.py), and each vLLM engine costs a start-up."""
    # vllm_model_dir: skipped without vLLM (a failure under make test); the round's model is the run's.
    run = _copy(start, tmp_path / "vllm")
    online = {"methods": ["drdo"], "backend": "vllm", "engine_kwargs": vllm_engine_kwargs, "batch_size": 16}
    one_step = {"lr": 5e-4, "max_steps": 1, "checkpoint_every": 0}  # training is tested above
    cfg = _pipeline(run, heldout=None, train=one_step, **online)
    result = run_pipeline(cfg, stages=ONLINE)
    assert [k for k, v in result["stages"].items() if v["status"] == "done"] == [
        *(f"online:1:{step}:drdo" for step in ("sample", "pairs", "score", "train")),
        "online:1:record",
        "report",
    ]
    r1 = run / "rounds" / "1"
    generation = json.loads((r1 / "samples" / "round" / "align-drdo" / "generation.json").read_text())
    assert (generation["backend"], generation["rows"]) == ("vllm", PROMPTS_PER_ROUND * SAMPLES)
    pairs = _jsonl(r1 / "pairs" / "drdo" / "pairs.jsonl")
    assert pairs and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    assert pq.read_table(r1 / "scored" / "pairs-drdo" / "data").num_rows == len(pairs)
    trained, tiny = _weights(r1 / "models" / "align-drdo"), _weights(start / "models" / "tiny")
    assert any(not torch.equal(trained[k], tiny[k]) for k in tiny)
    record = json.loads((r1 / "round.json").read_text())["methods"]["drdo"]
    assert record["samples"]["backend"] == "vllm" and record["winrates"] == {}
