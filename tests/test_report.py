"""`drdo-ray report`: a run directory with training metrics and eval results becomes one
Markdown report with PNG figures in the paper's layouts; partial runs still report; an empty
one is a one-line error. No Ray, no models: the inputs are written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drdo_ray.cli import main
from drdo_ray.eval import stats
from drdo_ray.eval.ood import ood_result, write_ood
from drdo_ray.eval.results import write_result
from drdo_ray.eval.winrate import compute_winrate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(run: Path, name: str, loss: str, steps: int, drift: float) -> None:
    base = run / "train" / name
    base.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    with (base / "metrics.jsonl").open("w") as f:
        for step in range(1, steps + 1):
            x = step / steps
            row = {
                "step": step,
                "loss": 0.7 * math.exp(-2 * x) + 0.02 * rng.standard_normal(),
                "reward_accuracy": min(1.0, 0.5 + drift * x + 0.05 * rng.standard_normal()),
                "margin": drift * 2 * x,
                "chosen_logps": -1.2 + 0.1 * x,
                "rejected_logps": -1.2 - drift * x,
                "lr": 5e-6,
                "grad_norm": float("nan") if step == 1 else 1.0,
                "consumed_samples": 64 * step,
            }
            if loss == "drdo":
                row |= {
                    "distill_loss": 0.5 * math.exp(-3 * x),
                    "contrastive_loss": 0.1 * math.exp(-x),
                    "p_w": 0.5 + 0.3 * x,
                }
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 99, "loss": 0.1')  # a line cut by a crash mid-write is skipped
    (base / "status.json").write_text(json.dumps({"status": "finished", "global_step": steps}))
    model = run / "models" / name
    model.mkdir(parents=True)
    (model / "drdo_training.json").write_text(
        json.dumps({"stage": "align", "loss": loss, "lr": 5e-6, "gamma": 2.0})
    )


def _winrate(run: Path, a: str, b: str, edge: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for t in (0.2, 0.5, 0.7, 0.9):
        for i in range(60):
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "temperature": t,
                    "sample_idx": 0,
                    "reward_a": rng.normal(edge * (1 + t), 1),
                    "reward_b": rng.normal(0, 1),
                    "reward_ref": rng.normal(0.2, 1),
                    "prompt_tokens": int(rng.integers(20, 400)),
                }
            )
    pairs = pd.DataFrame(rows)
    result = compute_winrate(pairs, n_boot=200)
    out = run / "eval" / f"winrate-{a}-vs-{b}"
    gen = {
        "model": f"runs/models/{a}",
        "prompts": "runs/data/ultrafeedback",
        "top_p": 0.8,
        "temperatures": [0.2, 0.5, 0.7, 0.9],
    }
    write_result(
        str(out / "winrate.json"),
        {
            "kind": "winrate",
            "a": {"name": a, "samples": f"runs/samples/{a}", "generation": gen},
            "b": {"name": b, "samples": f"runs/samples/{b}"},
            **result,
            "oracle": {"path": "runs/models/oracle"},
        },
    )
    write_ood(str(out), ood_result(pairs.to_dict("records"), source="winrate", a=a, b=b, n_boot=100))


def _judge(run: Path, a: str, b: str, wins: int, ties: int, losses: int, dropped: int) -> None:
    outcomes = [1] * wins + [0] * ties + [-1] * losses
    summary = stats.summarize(outcomes, n_boot=200)
    out = run / "eval" / f"judge-{a}-vs-{b}"
    write_result(
        str(out / "judge.json"),
        {
            "kind": "judge",
            "a": {"name": a, "generation": {"prompts": "runs/data/cnn_dailymail"}},
            "b": {"name": b},
            "judge": {"model": "gpt-4o", "base_url": None, "task": "summarize", "orders": "both"},
            **summary,
            "dropped": dropped,
            "requests": 2 * (wins + ties + losses),
            "cache_hits": 0,
            "cost_usd": 1.234,
            "tokens": {"total": 1000},
        },
    )


def _kl(run: Path, label: str, step: int, kl: float) -> None:
    write_result(
        str(run / "eval" / f"kl-{label}-{step}" / "kl.json"),
        {"kind": "kl", "label": label, "step": step, "kl": kl, "n_samples": 40},
    )


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    _train(run, "align-drdo", "drdo", 80, 0.4)
    _train(run, "align-dpo", "dpo", 80, 0.2)
    _winrate(run, "align-drdo", "align-dpo", 0.3, 0)
    _winrate(run, "align-drdo", "sft", 0.15, 1)
    _judge(run, "align-drdo", "align-dpo", 748, 10, 168, 7)
    _judge(run, "gold", "align-drdo", 525, 3, 466, 6)
    for step, (g2, dpo) in zip(
        (100, 200, 300, 400), ((0.44, 0.38), (1.51, 0.39), (1.67, 0.42), (1.63, 0.44))
    ):
        _kl(run, "DRDO (γ=2)", step, g2)
        _kl(run, "DPO (β=0.1)", step, dpo)
    return run


def test_report_has_every_section_and_figure(run_dir, capsys):
    assert main(["report", "--run", str(run_dir), "--title", "Test run"]) == 0
    report = run_dir / "report" / "report.md"
    assert capsys.readouterr().out.strip() == str(report)
    text = report.read_text()
    assert text.startswith("# Test run")
    for heading in (
        "## Headline",
        "## Training curves",
        "paper Fig. 2",
        "paper Table 1",
        "paper Fig. 6",
        "paper Table 7",
        "## Configs",
    ):
        assert heading in text, heading
    # Headline: every comparison, with its evaluator.
    assert "| align-drdo vs align-dpo | Oracle | ultrafeedback |" in text
    assert "| align-drdo vs align-dpo | judge gpt-4o | cnn_dailymail | 926 | 748 | 10 | 168 | 7 |" in text
    # Table 1 layout: Comparison, # Wins, Win Rate.
    assert "| Comparison | # Wins | Win Rate |" in text
    assert f"| align-drdo vs. align-dpo | 748 | {100 * (748 + 5) / 926:.1f}% |" in text
    # Table 7 layout: one row per step, one column per run.
    assert "| Step | DPO (β=0.1) | DRDO (γ=2) |" in text
    assert "| 200 | 0.390 | 1.510 |" in text
    figures = run_dir / "report" / "figures"
    names = sorted(p.name for p in figures.glob("*.png"))
    assert names == ["ood_winrate.png", "training_align.png", "winrate_vs_temperature.png"]
    for name in names:
        assert (figures / name).read_bytes().startswith(PNG_MAGIC)
        assert f"](figures/{name})" in text
    assert '"gamma": 2.0' in text  # the training config is in the report
    assert "| align-drdo | align | drdo | 80 | finished |" in text  # the cut last line was skipped


def test_partial_and_empty_runs(tmp_path, capsys):
    run = tmp_path / "only-training"
    _train(run, "align-drdo", "drdo", 10, 0.3)
    assert main(["report", "--run", str(run), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "_No Oracle win rates" in text and "_No judge results" in text and "_No KL results" in text
    assert (tmp_path / "rep" / "figures" / "training_align.png").exists()
    (tmp_path / "empty").mkdir()
    assert main(["report", "--run", str(tmp_path / "empty")]) == 2
    assert "neither training runs" in capsys.readouterr().err
    assert main(["report", "--run", str(tmp_path / "missing")]) == 2
