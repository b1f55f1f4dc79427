"""Win-rate statistics against hand-computed examples: ties count half, unequal sample counts
pool per pair, the bootstrap interval is deterministic, contains the point estimate and narrows
with n, prompts (not samples) are the resampling unit; OOD bins; sample-set pairing. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drdo_ray.errors import UserError
from drdo_ray.eval import stats
from drdo_ray.eval.samples import SampleSet, load_samples, pair, reference_set, select_pairs
from drdo_ray.eval.winrate import compute_winrate


def test_outcomes_and_ties_count_half():
    out = stats.outcomes_from_rewards([1.0, 2.0, 3.0, 3.0], [0.0, 2.0, 4.0, 3.0])
    assert out.tolist() == [1, 0, -1, 0]
    assert stats.win_rate(out) == pytest.approx((1 + 0.5 * 2) / 4)
    assert stats.win_rate([1, 1, 0, -1]) == pytest.approx(0.625)
    assert stats.win_rate([]) is None
    # A tie margin widens what counts as a tie.
    assert stats.outcomes_from_rewards([1.0, 1.05], [1.02, 1.0], tie_margin=0.03).tolist() == [0, 1]
    # A-vs-B and B-vs-A are complementary (ties half on both sides).
    a, b = np.array([3.0, 1.0, 2.0, 2.0, 5.0]), np.array([1.0, 1.0, 4.0, 2.0, 0.0])
    assert (
        stats.win_rate(stats.outcomes_from_rewards(a, b)) + stats.win_rate(stats.outcomes_from_rewards(b, a))
        == 1
    )
    with pytest.raises(ValueError):
        stats.outcomes_from_rewards([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.win_rate([2])


def test_summarize_hand_computed_with_unequal_samples_per_prompt():
    # p1 has three samples (W, W, L), p2 one (L): the rate pools pairs, 2/4, not the mean of
    # per-prompt rates ((2/3 + 0) / 2).
    summary = stats.summarize([1, 1, -1, -1], ["p1", "p1", "p1", "p2"], n_boot=500, seed=0)
    assert summary == {**summary, "n": 4, "wins": 2, "ties": 0, "losses": 2, "win_rate": 0.5}
    empty = stats.summarize([], n_boot=500)
    assert empty["n"] == 0 and empty["win_rate"] is None and empty["ci95"] is None


def test_bootstrap_is_deterministic_contains_estimate_and_narrows():
    rng = np.random.default_rng(123)
    widths = []
    for n in (40, 400, 4000):
        outcomes = rng.choice([1, 0, -1], size=n, p=[0.6, 0.1, 0.3])
        lo, hi = stats.bootstrap_ci(outcomes, n_boot=1000, seed=7)
        assert lo <= stats.win_rate(outcomes) <= hi
        assert (lo, hi) == stats.bootstrap_ci(outcomes, n_boot=1000, seed=7)  # same seed, same interval
        assert (lo, hi) != stats.bootstrap_ci(outcomes, n_boot=1000, seed=8)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # Roughly the normal-approximation width for n=4000 (p~0.65: 2*1.96*sqrt(var/n), var of scores).
    scores = (outcomes + 1) / 2
    assert widths[2] == pytest.approx(2 * 1.96 * scores.std() / np.sqrt(4000), rel=0.2)
    assert stats.bootstrap_ci([1, -1], n_boot=0) is None
    assert stats.bootstrap_ci([1], n_boot=100) == (1.0, 1.0)


def test_bootstrap_resamples_prompts_not_samples():
    # 20 prompts x 10 samples, every sample of a prompt with the same outcome: the effective n is
    # 20, so the prompt-level interval is much wider than a per-sample one would claim.
    per_prompt = np.repeat(np.resize([1, -1, 1, 0, 1], 20), 10)
    clusters = np.repeat([f"p{i}" for i in range(20)], 10)
    lo_c, hi_c = stats.bootstrap_ci(per_prompt, clusters, n_boot=1000, seed=0)
    lo_s, hi_s = stats.bootstrap_ci(per_prompt, n_boot=1000, seed=0)
    assert (hi_c - lo_c) > 2 * (hi_s - lo_s)
    # With one sample per prompt, clusters change nothing.
    flat = per_prompt[::10]
    assert stats.bootstrap_ci(
        flat, [f"p{i}" for i in range(20)], n_boot=300, seed=1, label="x"
    ) == stats.bootstrap_ci(flat, None, n_boot=300, seed=1, label="x")


def test_group_intervals_do_not_depend_on_group_order():
    outcomes = [1, -1, 0, 1, 1, -1, 1, 1]
    temps = ["0.2", "0.7", "0.2", "0.7", "0.2", "0.7", "0.9", "0.9"]
    grouped = stats.by_group(outcomes, temps, n_boot=300, seed=0)
    assert list(grouped) == ["0.2", "0.7", "0.9"]
    assert (
        grouped["0.2"]["wins"] == 2
        and grouped["0.2"]["ties"] == 1
        and grouped["0.2"]["win_rate"] == pytest.approx(2.5 / 3)
    )
    only_07 = stats.by_group(
        [o for o, t in zip(outcomes, temps) if t == "0.7"], ["0.7"] * 3, n_boot=300, seed=0
    )
    assert only_07["0.7"] == grouped["0.7"]


def test_length_bins_hand_computed():
    outcomes = [1, -1, 1, 0, -1, 1]
    lengths = [0, 49, 50, 120, 149, 150]
    bins = stats.length_bins(outcomes, lengths, width=50, n_boot=100)
    assert [(b["label"], b["n"], b["win_rate"]) for b in bins] == [
        ("0-49", 2, 0.5),
        ("50-99", 1, 1.0),
        ("100-149", 2, 0.25),
        ("150-199", 1, 1.0),
    ]
    assert stats.length_bin(149) == 100 and stats.length_bin(150, 75) == 150
    with pytest.raises(ValueError):
        stats.length_bins([1], [1, 2])


def test_formatting():
    assert stats.fmt_rate(0.6161, [0.58, 0.65]) == "61.6% [58.0, 65.0]"
    assert stats.fmt_rate(None) == "-" and stats.fmt_ci(None) == "-"
    assert (
        stats.temperature_key(0.7) == "0.7"
        and stats.temperature_key(1.0) == "1"
        and stats.temperature_key(None) == "greedy"
    )


# ------------------------------------------------------------------------- pairing


def _set(name: str, rows: list[tuple]) -> SampleSet:
    frame = pd.DataFrame(rows, columns=["prompt_id", "temperature", "sample_idx", "text", "reference"])
    frame["prompt"] = "prompt " + frame["prompt_id"]
    frame["chat"] = False
    return SampleSet(path=name, rows=frame, name=name)


def test_pairing_with_unequal_sample_counts_and_references():
    a = _set(
        "a",
        [
            ("p1", 0.7, 0, "a10", "ref1"),
            ("p1", 0.7, 1, "a11", "ref1"),
            ("p1", 0.7, 2, "a12", "ref1"),
            ("p2", 0.7, 0, "a20", None),
        ],
    )
    b = _set("b", [("p1", 0.7, 0, "b10", "ref1"), ("p1", 0.7, 1, "b11", "ref1"), ("p3", 0.7, 0, "b30", None)])
    pairing = pair(a, b)
    assert pairing.pairs[["prompt_id", "sample_idx", "text_a", "text_b"]].values.tolist() == [
        ["p1", 0, "a10", "b10"],
        ["p1", 1, "a11", "b11"],
    ]
    assert (pairing.unpaired_a, pairing.unpaired_b) == (2, 1)
    ref = pair(a, reference_set(a))
    assert ref.pairs["text_b"].tolist() == ["ref1", "ref1", "ref1"] and ref.unpaired_a == 1
    other = _set("c", [("p1", 0.7, 0, "c", None)])
    other.rows["prompt"] = "a different prompt"
    with pytest.raises(UserError, match="different prompts"):
        pair(a, other)
    subset = select_pairs(ref.pairs, max_pairs=2, seed=0)
    assert len(subset) == 2 and subset.equals(select_pairs(ref.pairs, max_pairs=2, seed=0))


def test_compute_winrate_hand_computed():
    pairs = pd.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p2", "p3", "p1", "p2"],
            "temperature": [0.2, 0.2, 0.2, 0.2, 0.7, 0.7],
            "sample_idx": [0, 1, 0, 0, 0, 0],
            "reward_a": [1.0, 0.5, 2.0, 1.0, 3.0, 0.0],
            "reward_b": [0.0, 0.5, 1.0, 2.0, 1.0, 1.0],
            "reward_ref": [0.5, 0.5, np.nan, 0.0, 0.5, np.nan],
        }
    )
    result = compute_winrate(pairs, n_boot=200, seed=0)
    assert pairs["outcome"].tolist() == ["win", "tie", "win", "loss", "win", "loss"]
    assert (result["wins"], result["ties"], result["losses"]) == (3, 1, 2)
    assert result["win_rate"] == pytest.approx(3.5 / 6)
    assert result["mean_reward_a"] == pytest.approx(7.5 / 6) and result["mean_reward_b"] == pytest.approx(
        5.5 / 6
    )
    adv = result["reward_advantage"]
    assert adv["n"] == 4 and adv["a"]["mean"] == pytest.approx((0.5 + 0 + 1 + 2.5) / 4)
    assert adv["b"]["mean"] == pytest.approx((-0.5 + 0 + 2 + 0.5) / 4)
    t02 = result["by_temperature"]["0.2"]
    assert (t02["n"], t02["wins"], t02["ties"], t02["losses"]) == (4, 2, 1, 1)
    assert t02["win_rate"] == pytest.approx(2.5 / 4)
    assert result["by_temperature"]["0.7"]["win_rate"] == pytest.approx(0.5)


def test_load_samples_validates(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    row = {
        "prompt_id": 1,
        "prompt": "p",
        "chat": False,
        "reference": "",
        "model": "m",
        "temperature": 0.70000001,
        "sample_idx": 0,
        "text": None,
        "num_tokens": 0,
        "finish_reason": "stop",
    }
    (gen / "samples.jsonl").write_text(json.dumps(row) + "\n")
    (gen / "generation.json").write_text(
        json.dumps({"model": "/runs/models/align-drdo/", "temperatures": [0.7]})
    )
    loaded = load_samples(str(gen))
    assert loaded.name == "align-drdo"
    r = loaded.rows.iloc[0]
    assert r["prompt_id"] == "1" and r["temperature"] == 0.7 and r["text"] == "" and pd.isna(r["reference"])
    (gen / "samples.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError, match="duplicate"):
        load_samples(str(gen))
    (gen / "samples.jsonl").write_text(json.dumps({"prompt_id": "x"}) + "\n")
    with pytest.raises(UserError, match="lacks column"):
        load_samples(str(gen))
    with pytest.raises(UserError, match="not found"):
        load_samples(str(tmp_path / "missing"))


def test_one_rule_decides_whether_two_temperatures_are_the_same():
    from drdo_ray.eval.ood import ood_result
    from drdo_ray.generation.sampling_params import temperature_id

    assert temperature_id(0.7000000001) == temperature_id(0.7) != temperature_id(0.7001)
    assert temperature_id(None) is None and temperature_id(float("nan")) is None
    assert stats.temperature_key(0.7000000001) == stats.temperature_key(0.7) == "0.7"
    # The OOD filter keeps a row written as 0.7000000001 when asked for 0.7, and only those.
    rows = [
        {"outcome": "win", "prompt_tokens": 10, "prompt_id": str(i), "temperature": t}
        for i, t in enumerate([0.7000000001, 0.7, 0.7001, 0.2])
    ]
    assert ood_result(rows, at_temperature=0.7, n_boot=0)["n"] == 2
