"""Online rounds without Ray: the pair rules, the online section's checks, the rounds' steps
(what each reads and writes, in which order, how stale its data is) and the runner's overlap
(a background step runs beside the next ones; a step that needs it waits), with the stage actions
replaced by recorders that write each step's marker."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

from drdo_ray import pipeline
from drdo_ray.artifacts import fingerprint
from drdo_ray.config import (
    GenerateConfig,
    PairsConfig,
    RolloutConfig,
    ScoreConfig,
    TrainConfig,
    WinrateConfig,
    load_config,
)
from drdo_ray.errors import UserError
from drdo_ray.online.pairs import ScoredSample, build_pairs, describe
from drdo_ray.online.round_record import RoundRecordConfig
from drdo_ray.pipeline import plan, run_pipeline
from drdo_ray.pipeline_config import PipelineConfig
from drdo_ray.run_layout import RunLayout


def _s(prompt: str, idx: int, reward: float, text: str | None = None) -> ScoredSample:
    return ScoredSample(prompt, f"prompt {prompt}", False, idx, text or f"{prompt}-{idx}", reward)


def test_best_vs_worst_takes_one_pair_per_prompt_and_counts_the_rest():
    samples = [
        _s("a", 0, 0.5),
        _s("a", 1, 2.0),
        _s("a", 2, -1.0),
        _s("a", 3, 2.0),  # ties the best: the lower index wins
        _s("b", 0, 1.0),
        _s("b", 1, 1.0),  # no margin
        _s("c", 0, 3.0, "same"),
        _s("c", 1, 0.0, "same"),  # one distinct text: no pair, whatever the rewards
        _s("d", 0, math.nan),
        _s("d", 1, 1.0),  # the NaN sample is counted; one sample left: no pair
    ]
    result = build_pairs(samples, "best_vs_worst", 0.0, "round-1")
    assert [(p["prompt_id"], p["chosen_idx"], p["rejected_idx"]) for p in result.pairs] == [("a", 1, 2)]
    pair = result.pairs[0]
    assert (pair["chosen"], pair["rejected"], pair["score_chosen"], pair["score_rejected"]) == (
        "a-1",
        "a-2",
        2.0,
        -1.0,
    )
    assert pair["id"] == "a:round-1:1>2" and pair["split"] == "round-1" and pair["prompt"] == "prompt a"
    assert dict(result.skipped) == {"no_margin": 1, "one_distinct_response": 2, "non_finite_reward": 1}
    summary = result.summary()
    assert (summary["prompts"], summary["pairs"], summary["prompts_with_pairs"]) == (4, 1, 1)
    assert summary["margin"]["mean"] == 3.0


def test_margin_rule_takes_every_pair_over_the_threshold():
    samples = [_s("a", 0, 0.0), _s("a", 1, 1.0), _s("a", 2, 3.0), _s("b", 0, 0.0), _s("b", 1, 0.4)]
    result = build_pairs(samples, "margin", 0.5, "round-2")
    assert sorted((p["prompt_id"], p["chosen_idx"], p["rejected_idx"]) for p in result.pairs) == [
        ("a", 1, 0),
        ("a", 2, 0),
        ("a", 2, 1),
    ]
    assert len({p["id"] for p in result.pairs}) == 3 and dict(result.skipped) == {"no_margin": 1}
    with pytest.raises(ValueError, match="margin must be >= 0"):
        build_pairs(samples, "margin", -1.0, "round-2")


def test_describe_gives_quartiles_and_ignores_nan():
    d = describe([1.0, 2.0, 3.0, 4.0, math.nan])
    assert (d["n"], d["mean"], d["median"], d["min"], d["max"], d["q25"]) == (4, 2.5, 2.5, 1.0, 4.0, 1.75)
    assert describe([])["n"] == 0


# ------------------------------------------------------------------------------ the config

BASE = {
    "run_dir": "RUN",
    "base_model": "org/base",
    "datasets": {
        "prefs": {"source": "tldr", "input": "sample"},
        "prompts": {"source": "tldr_sft", "input": "sample"},
    },
    "sft": {"data": "prompts"},
    "oracle": {"data": "prefs"},
    "online": {
        "rounds": 3,
        "prompts": "prompts",
        "prompts_per_round": 4,
        "samples_per_prompt": 2,
        "heldout": "prompts",
        "heldout_prompts": 2,
        "methods": ["drdo", "dpo"],
    },
    "report": None,
}


def _online(**change) -> dict:
    return BASE | {"online": BASE["online"] | change}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (BASE | {"oracle": None}, "online: the Oracle scores the rounds' samples; add an oracle section"),
        (_online(prompts=None), "online.prompts: name the prompt source"),
        (_online(heldout="nope"), "online.heldout: nope is not one of the datasets: prefs, prompts"),
        (_online(methods=[]), "online.methods: name the methods"),
        (
            _online(heldout_prompts=None),
            "online.heldout_prompts: held-out prompts taken from the prompt source",
        ),
        (_online(methods=["bogus"]), "online.methods.bogus: unknown loss 'bogus'"),
        (_online(methods=["edpo"]), "online.methods.edpo: e-DPO needs its Oracles; add edpo_oracles: K"),
        (_online(serve={"method": "ipo"}), "online.serve.method: ipo is not one of the methods: drdo, dpo"),
        (_online(methods=["drdo"], train={"beta": 0.3}), "online.train.beta belongs to the align losses"),
        (
            _online(samples_per_prompt=1),
            "online.samples_per_prompt: Input should be greater than or equal to 2",
        ),
        (_online(serve={"model": "x"}), "online.serve: model is set by the pipeline"),
    ],
)
def test_online_section_problems_are_one_line_errors(tmp_path, config, message):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"pipeline": config}))
    with pytest.raises(UserError, match=r"^invalid PipelineConfig: ") as err:
        load_config(PipelineConfig, config_file=str(path), section="pipeline")
    assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ the plan


def test_each_round_reads_the_previous_rounds_policy_and_the_next_window():
    steps = {s.id: s for s in plan(PipelineConfig.model_validate(BASE))}
    run, sft, oracle = RunLayout("RUN"), "RUN/models/sft", "RUN/models/oracle"
    r2 = run.round(2)
    sample = steps["online:2:sample:drdo"].config
    assert isinstance(sample, GenerateConfig)
    # Round 2 samples with round 1's policy, the 2nd window after the 2 held-out prompts.
    assert (sample.model, sample.offset, sample.limit, sample.samples_per_prompt) == (
        run.round(1).model("align-drdo"),
        2 + 4,
        4,
        2,
    )
    assert sample.out == r2.samples("round", "align-drdo") and not steps["online:2:sample:drdo"].background
    assert (
        steps["online:1:sample:drdo"].config.model == sft and steps["online:1:sample:drdo"].config.offset == 2
    )
    pairs = steps["online:2:pairs:drdo"].config
    assert isinstance(pairs, PairsConfig)
    assert (pairs.samples, pairs.oracle, pairs.data, pairs.tag) == (
        sample.out,
        oracle,
        r2.data("pairs-drdo"),
        "round-2",
    )
    # DRDO's pairs need no reference; DPO's get the SFT model's log-probs, with DPO's sum reduction.
    score_drdo, score_dpo = steps["online:2:score:drdo"].config, steps["online:2:score:dpo"].config
    assert isinstance(score_dpo, ScoreConfig)
    assert (score_drdo.reference, score_dpo.reference, score_dpo.reduction) == (None, sft, "sum")
    assert score_drdo.oracles == [oracle] and score_dpo.data == r2.data("pairs-dpo")
    train = steps["online:2:train:dpo"].config
    assert isinstance(train, TrainConfig)
    assert (train.model, train.data, train.run_dir, train.name) == (
        run.round(1).model("align-dpo"),
        r2.scored("pairs-dpo"),
        r2.root,
        "align-dpo",
    )
    assert steps["online:2:train:dpo"].output == r2.model("align-dpo")
    assert steps["online:2:train:dpo"].needs == ["online:1:train:dpo", "online:2:score:dpo"]
    vs_prev = steps["online:2:winrate:dpo-vs-previous"].config
    assert isinstance(vs_prev, WinrateConfig)
    assert (vs_prev.a, vs_prev.b) == (
        r2.samples("heldout", "align-dpo"),
        run.round(1).samples("heldout", "align-dpo"),
    )
    assert steps["online:2:winrate:dpo-vs-sft"].config.b == run.round(0).samples("heldout", "sft")
    assert "online:1:winrate:dpo-vs-previous" not in steps  # round 1's previous policy is SFT
    heldout = steps["online:2:heldout:drdo"].config
    assert (heldout.offset, heldout.limit, heldout.temperatures) == (None, 2, [1.0])
    record = steps["online:3:record"].config
    assert isinstance(record, RoundRecordConfig) and record.out == run.round(3).round_record
    assert record.methods["dpo"]["staleness"] == 0 and record.prompts["offset"] == 2 + 2 * 4


def test_overlap_samples_the_next_round_with_the_policy_this_round_trains():
    steps = plan(PipelineConfig.model_validate(_online(overlap=True, reference="previous")))
    ids = [s.id for s in steps]
    by_id = {s.id: s for s in steps}
    # Round 2's samples start before round 1 trains, from the policy round 1 trains (SFT) ...
    assert ids.index("online:2:sample:drdo") < ids.index("online:1:train:drdo")
    assert (
        by_id["online:2:sample:drdo"].background
        and by_id["online:2:sample:drdo"].config.model == "RUN/models/sft"
    )
    assert by_id["online:3:sample:dpo"].config.model == RunLayout("RUN").round(1).model("align-dpo")
    assert not by_id["online:1:sample:drdo"].background
    # ... so rounds 2 and 3 learn from data one round stale; DPO's reference is its previous round.
    record = by_id["online:3:record"].config
    assert [record.methods["drdo"][k] for k in ("sampled_round", "staleness")] == [1, 1]
    assert by_id["online:1:record"].config.methods["drdo"]["staleness"] == 0
    assert by_id["online:3:score:dpo"].config.reference == RunLayout("RUN").round(2).model("align-dpo")
    for s in steps:  # every input is produced earlier in run order
        assert all(ids.index(n) < ids.index(s.id) for n in s.needs), s.id


def test_methods_settings_layer_over_the_train_sections_and_edpo_uses_its_oracles():
    cfg = PipelineConfig.model_validate(
        BASE
        | {
            "train": {"lr": 1e-5, "max_steps": 7},
            "edpo_oracles": 2,
            "online": BASE["online"]
            | {
                "methods": {"drdo": {"alpha": 0.5}, "dpo": None, "ens": {"loss": "edpo"}},
                "train": {"lr": 2e-4, "beta": 0.3},
                "serve": {"method": "dpo", "port": 0, "app_name": "rounds"},
            },
        }
    )
    steps = {s.id: s.config for s in plan(cfg)}
    drdo, dpo, ens = (steps[f"online:1:train:{m}"] for m in ("drdo", "dpo", "ens"))
    assert (drdo.lr, drdo.max_steps, drdo.alpha, dpo.beta, ens.loss, ens.beta) == (
        2e-4,
        7,
        0.5,
        0.3,
        "edpo",
        0.3,
    )
    assert steps["online:1:score:ens"].oracles == ["RUN/models/oracle-edpo-0", "RUN/models/oracle-edpo-1"]
    serve = steps["online:2:serve"]
    assert isinstance(serve, RolloutConfig)
    assert (serve.model, serve.revision, serve.app_name) == (
        RunLayout("RUN").round(2).model("align-dpo"),
        "round-2",
        "rounds",
    )


# ------------------------------------------------------------------------------ running


def _record(cfg: RoundRecordConfig) -> dict:
    """round.json's inputs part, as write_round_record fingerprints them."""

    def entry(path):
        return {"path": path, "fingerprint": fingerprint(path)} if path else None

    methods = {
        m: {k: entry(e[k]) for k in ("start", "sampled_by", "reference")} for m, e in cfg.methods.items()
    }
    return {"settings": cfg.settings, "prompts": cfg.prompts, "oracle": entry(cfg.oracle), "methods": methods}


@pytest.fixture
def fake_stages(monkeypatch):
    """Every action writes its step's marker and records when it ran; round 2's samples and
    round 1's training take a while, so that running beside each other shows."""
    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()

    def fake(cfg, console):
        t0 = time.monotonic()
        if isinstance(cfg, TrainConfig):
            key, marker = (
                f"train {cfg.run_dir}",
                Path(RunLayout(cfg.run_dir).model(str(cfg.name))) / "config.json",
            )
        elif isinstance(cfg, GenerateConfig):
            key, marker = f"generate {cfg.out}", Path(cfg.out) / "generation.json"
        elif isinstance(cfg, PairsConfig):
            key, marker = f"pairs {cfg.data}", Path(cfg.data) / "stats.json"
        elif isinstance(cfg, ScoreConfig):
            key, marker = f"score {cfg.out}", Path(cfg.out) / "scoring.json"
        elif isinstance(cfg, WinrateConfig):
            key, marker = f"winrate {cfg.out}", Path(cfg.out) / "winrate.json"
        elif isinstance(cfg, RoundRecordConfig):
            key, marker = f"record {cfg.round}", Path(cfg.out)
        else:
            key, marker = f"prepare {cfg.out}", Path(cfg.out) / "stats.json"
        if "rounds/2/samples/round" in key or key.endswith("rounds/1"):
            time.sleep(0.6)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(_record(cfg)) if isinstance(cfg, RoundRecordConfig) else "{}")
        with lock:
            spans[key] = (t0, time.monotonic())

    monkeypatch.setattr(pipeline, "_prepare", fake)
    monkeypatch.setattr(pipeline, "_train", fake)
    for name in ("generate", "score", "winrate", "pairs", "record"):
        monkeypatch.setitem(pipeline.ROUND_ACTIONS, name, fake)
    return spans


def test_overlap_runs_the_next_rounds_sampling_beside_training(tmp_path, fake_stages):
    run = tmp_path / "run"
    cfg = PipelineConfig.model_validate(
        _online(rounds=2, overlap=True, methods=["drdo"]) | {"run_dir": str(run)}
    )
    result = run_pipeline(cfg)
    assert all(v["status"] == "done" for v in result["stages"].values())
    sample2 = fake_stages[f"generate {run}/rounds/2/samples/round/align-drdo"]
    train1 = fake_stages[f"train {run}/rounds/1"]
    pairs2 = fake_stages[f"pairs {run}/rounds/2/data/pairs-drdo"]
    assert sample2[0] < train1[1] and train1[0] < sample2[1]  # they ran at the same time
    assert pairs2[0] >= sample2[1]  # the step that reads round 2's samples waited for them
    fake_stages.clear()
    again = run_pipeline(cfg)  # a rerun skips every finished round
    assert fake_stages == {} and {v["status"] for v in again["stages"].values()} == {"skipped: outputs exist"}
    # A finished round planned from other settings or inputs is refused, not silently kept.
    wider = PipelineConfig.model_validate(
        cfg.model_dump(exclude_unset=True)
        | {"online": _online(rounds=3, overlap=True, methods=["drdo"], prompts_per_round=5)["online"]}
    )
    with pytest.raises(
        UserError, match=r"stage online:1:record: .* was made with prompts_per_round 4, not 5; other prompts"
    ):
        run_pipeline(wider)
    (run / "models" / "oracle" / "config.json").write_text('{"retrained": true}')
    with pytest.raises(UserError, match=r"oracle .*/models/oracle changed since; pass --force"):
        run_pipeline(cfg)
    assert fake_stages == {}


def test_a_failed_background_step_fails_the_run_where_it_is_needed(tmp_path, fake_stages, monkeypatch):
    run = tmp_path / "run"
    cfg = PipelineConfig.model_validate(
        _online(rounds=2, overlap=True, methods=["drdo"]) | {"run_dir": str(run)}
    )
    fake = pipeline.ROUND_ACTIONS["generate"]

    def generate(cfg, console):
        if "rounds/2/samples/round" in cfg.out:
            raise UserError("engine crashed")
        fake(cfg, console)

    monkeypatch.setitem(pipeline.ROUND_ACTIONS, "generate", generate)
    with pytest.raises(UserError, match="engine crashed"):
        run_pipeline(cfg)
    status = json.loads((run / "pipeline.json").read_text())["stages"]
    assert status["online:2:sample:drdo"]["status"] == "failed"
    assert status["online:1:train:drdo"]["status"] == "done"  # what ran beside it finished
    assert "online:2:pairs:drdo" not in status  # what needed it never started


# ------------------------------------------------------------------------------ the report


def _round(run: Path, k: int, staleness: int, rates: dict[str, float]) -> None:
    layout = RunLayout(str(run)).round(k)
    methods = {}
    for method, rate in rates.items():
        pairs = Path(layout.pairs(method))
        pairs.mkdir(parents=True)
        rewards = [k + 0.1 * i for i in range(4)]
        (pairs / "scores.jsonl").write_text("".join(json.dumps({"reward": r}) + "\n" for r in rewards))
        methods[method] = {
            "loss": method,
            "sampled_by": {"path": "x", "round": k - 1 - staleness},
            "staleness": staleness,
            "sample_rewards": describe(rewards),
            "pairs": {
                "pairs": 3,
                "prompts": 4,
                "prompts_with_pairs": 3,
                "skipped": {"no_margin": 1},
                "margin": {"mean": 0.25},
            },
            "winrates": {"sft": {"win_rate": rate, "ci95": [rate - 0.1, rate + 0.1], "n": 8}}
            | ({"previous": {"win_rate": 0.5, "ci95": None, "n": 8}} if k > 1 else {}),
        }
    Path(layout.round_record).write_text(json.dumps({"round": k, "tag": f"round-{k}", "methods": methods}))


def test_the_report_shows_win_rate_and_sample_rewards_by_round(tmp_path):
    from drdo_ray.config import ReportConfig
    from drdo_ray.eval.report import build_report

    run = tmp_path / "run"
    _round(run, 1, 0, {"drdo": 0.6, "dpo": 0.55})
    _round(run, 2, 1, {"drdo": 0.7, "dpo": 0.5})
    (run / "rounds" / "3").mkdir()  # an unfinished round: no round.json, not reported
    result = build_report(ReportConfig(run=str(run)))
    report = Path(result["report"]).read_text()
    section = report[report.index("## Online rounds") :]
    assert (
        "| 1 | drdo | 0 | 0 | 3 / 4 | no_margin 1 | 1.150 [1.075, 1.225] | 0.250 | 60.0% [50.0, 70.0] | - |"
        in section
    )
    assert "| 2 | dpo | 0 | 1 | 3 / 4 |" in section and "50.0% [40.0, 60.0] | 50.0% |" in section
    assert "| 3 |" not in section
    figures = {Path(p).name for p in result["figures"]}
    assert {"online_winrate_vs_round.png", "online_sample_rewards.png"} <= figures
