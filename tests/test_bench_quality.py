"""`drdo-ray bench quality`: the synthetic true reward (hand-checked values), the pair kinds and
their bands, fixed steps across shares, the tuning rule, the paired statistics (against a hand
computation) and one minimal end-to-end run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drdo_ray.bench import synthetic as syn

SPORTS = ["tell", "me", "about", "sports", ":"]


def test_true_reward_relevance_counts_distinct_on_topic_and_half_off_topic() -> None:
    # 3 distinct sports words (+3), one cooking word (-0.5), one filler (0); 5 words, no repeats.
    parts = syn.reward_parts(SPORTS, ["ball", "team", "goal", "recipe", "the"])
    assert parts.relevance == 2.5
    assert parts.repetition == 0
    assert parts.length == 0
    assert syn.true_reward(SPORTS, ["ball", "team", "goal", "recipe", "the"]) == 2.5


def test_true_reward_repetition_penalty() -> None:
    # ball x3, team: distinct on-topic 2, repeated words 2 -> 2 - 1.0 * 2 = 0.
    assert syn.true_reward(SPORTS, ["ball", "ball", "team", "ball"]) == 0.0
    # A repeated off-topic word costs the repetition too: -0.5 - 1.0.
    assert syn.true_reward(SPORTS, ["oven", "oven"]) == -1.5


def test_true_reward_length_penalty_and_optimum() -> None:
    eight = list(syn.TOPICS["sports"][:8])
    assert syn.true_reward(SPORTS, eight) == 8.0  # the optimum: TARGET_LENGTH distinct on-topic words
    ten = list(syn.TOPICS["sports"][:10])
    # 10 distinct on-topic words, 2 past the target: 10 - 1.5 * 2 = 7.
    assert syn.true_reward(SPORTS, ten) == 7.0
    assert syn.true_reward(SPORTS, []) == 0.0


def test_true_reward_reads_the_topic_from_the_prompt_and_ignores_order() -> None:
    cooking = ["a", "note", "on", "cooking", ":"]
    response = ["ball", "oven", "salt"]
    assert syn.true_reward(SPORTS, response) == 1 - 0.5 * 2
    assert syn.true_reward(cooking, response) == 2 - 0.5 * 1
    assert syn.true_reward(cooking, syn.permuted(response)) == syn.true_reward(cooking, response)
    with pytest.raises(ValueError, match="no topic"):
        syn.true_reward(["hello", ":"], response)


def test_prompts_have_one_length_and_vocabulary_covers_everything() -> None:
    rng = np.random.default_rng(0)
    prompts = syn.make_prompts(200, rng)
    vocab = set(syn.vocabulary())
    assert {len(p) for p in prompts} == {syn.PROMPT_LENGTH}
    demos = [syn.demonstration(p, rng) for p in prompts]
    assert all(set(p) <= vocab and set(d) <= vocab for p, d in zip(prompts, demos))
    assert all(2 <= len(d) <= 14 for d in demos)


def test_prompt_splits_are_disjoint_stratified_and_cover_every_prompt() -> None:
    splits = syn.split_prompts(0)
    as_set = {k: {tuple(p) for p in v} for k, v in splits.items()}
    assert as_set["train"].isdisjoint(as_set["validation"]) and as_set["train"].isdisjoint(as_set["test"])
    assert as_set["validation"].isdisjoint(as_set["test"])
    assert set.union(*as_set.values()) == {tuple(p) for p in syn.all_prompts()}
    assert len(syn.all_prompts()) == len(syn.TEMPLATES) * len(syn.TOPICS) == 128
    for prompts in splits.values():  # every split asks about every topic
        assert {syn.prompt_topic(p) for p in prompts} == set(syn.TOPICS)
    assert syn.split_prompts(0) == splits and syn.split_prompts(1) != splits


def test_offpolicy_generator_spans_the_reward_range() -> None:
    rng = np.random.default_rng(0)
    prompt = SPORTS
    responses = [syn.offpolicy_response(prompt, rng) for _ in range(2000)]
    assert all(3 <= len(y) <= 12 and set(y) <= set(syn.vocabulary()) for y in responses)
    rewards = [syn.true_reward(prompt, y) for y in responses]
    # Unlike the demonstrations, it reaches the optimum (8 distinct on-topic words) and goes well below 0.
    assert max(rewards) == syn.TARGET_LENGTH
    assert min(rewards) < -3
    demos = [syn.true_reward(prompt, syn.demonstration(prompt, rng)) for _ in range(2000)]
    assert np.mean(rewards) > np.mean(demos) + 0.5


def _pool(n_prompts: int = 20, size: int = 32, seed: int = 0) -> syn.Pool:
    rng = np.random.default_rng(seed)
    return {
        tuple(p): [syn.offpolicy_response(p, rng) for _ in range(size)] for p in syn.all_prompts()[:n_prompts]
    }


def _delta(q: syn.Pair) -> float:
    return syn.true_reward(q.prompt, q.chosen) - syn.true_reward(q.prompt, q.rejected)


@pytest.mark.parametrize("flip", [0.0, 0.1, 0.25])
def test_deterministic_pairs_are_separated_bt_labelled_and_flip_exactly(flip: float) -> None:
    pool = _pool()
    pairs = syn.labelled_pairs(
        pool, 400, rng=np.random.default_rng(3), margin=(1.5, np.inf), bt_scale=1.0, flip=flip
    )
    assert len(pairs) == 400
    assert sum(q.flipped for q in pairs) == round(flip * 400)
    for q in pairs:
        assert q.kind == "deterministic" and abs(q.delta) >= 1.5
        assert q.delta == pytest.approx(_delta(q))
        assert list(q.chosen) in pool[q.prompt] and list(q.rejected) in pool[q.prompt]
    # Unflipped labels follow r* with the Bradley-Terry probability: mostly, not always.
    unflipped = [q.delta > 0 for q in pairs if not q.flipped]
    assert 0.8 < np.mean(unflipped) < 0.995
    flipped = [q.delta > 0 for q in pairs if q.flipped]
    if flipped:
        assert np.mean(flipped) < 0.3
    again = syn.labelled_pairs(
        pool, 400, rng=np.random.default_rng(3), margin=(1.5, np.inf), bt_scale=1.0, flip=flip
    )
    assert again == pairs


def test_low_margin_pairs_have_margins_in_their_band_and_soft_labels() -> None:
    pool = _pool()
    pairs = syn.labelled_pairs(
        pool, 2000, rng=np.random.default_rng(5), margin=(0.5, 1.0), bt_scale=1.0, kind="lowmargin"
    )
    margins = {abs(_delta(q)) for q in pairs}
    assert margins == {0.5, 1.0}  # r* moves in steps of 0.5: the band holds exactly these two
    assert all(q.kind == "lowmargin" and not q.flipped for q in pairs)
    # Bradley-Terry labels at Δ = 0.5 and 1: the preferred response is chosen with p = σ(0.5), σ(1).
    for m in (0.5, 1.0):
        agree = np.mean([q.delta > 0 for q in pairs if abs(q.delta) == m])
        assert agree == pytest.approx(syn.bt_probability(m), abs=0.05)
    with pytest.raises(ValueError, match="positive margin"):
        syn.labelled_pairs(pool, 1, rng=np.random.default_rng(0), margin=(0.0, 1.0), bt_scale=1.0)


def test_ties_are_exact_with_coin_flip_order() -> None:
    ties = syn.tie_pairs(_pool(), 2000, rng=np.random.default_rng(4))
    assert all(q.kind == "tie" and _delta(q) == 0 == q.delta and q.chosen != q.rejected for q in ties)
    # Which of the two is "chosen" is a fair coin: by which is longer.
    longer = np.mean([len(q.chosen) > len(q.rejected) for q in ties if len(q.chosen) != len(q.rejected)])
    assert 0.44 < longer < 0.56


@pytest.mark.parametrize("share", [0.0, 0.3, 0.6, 0.9])
def test_nondeterministic_pairs_replace_deterministic_ones_so_steps_stay_equal(share: float) -> None:
    pool, rng = _pool(), np.random.default_rng(6)
    det = syn.labelled_pairs(pool, 200, rng=rng, margin=(1.5, np.inf), bt_scale=1.0)
    ties = syn.tie_pairs(pool, 180, rng=rng)
    mixed = syn.mixed_pairs(det, ties, share)
    k = round(share * 200)
    assert len(mixed) == 200  # the same number of pairs, so the same optimizer steps, at every share
    assert sum(q.kind == "tie" for q in mixed) == k == syn.nondeterministic_count(200, share)
    # Prefixes: a higher share keeps every tie of a lower one and drops deterministic pairs from the end.
    assert mixed[: 200 - k] == det[: 200 - k] and mixed[200 - k :] == ties[:k]
    with pytest.raises(ValueError, match="share"):
        syn.nondeterministic_count(200, 1.0)
    with pytest.raises(ValueError, match="non-deterministic pairs"):
        syn.mixed_pairs(det, ties[:10], 0.5)


# ------------------------------------------------------------------ the protocol's settings


def test_config_keeps_tuning_and_report_seeds_apart_and_checks_the_design() -> None:
    from drdo_ray.bench.quality_config import BenchQualityConfig

    cfg = BenchQualityConfig()
    assert not set(cfg.seeds) & set(cfg.tune_seeds) and len(cfg.seeds) >= 5 and len(cfg.tune_seeds) >= 2
    with pytest.raises(ValueError, match=r"tuning seeds \[11\] are also report seeds"):
        BenchQualityConfig(seeds=[10, 11], tune_seeds=[11, 12])
    with pytest.raises(ValueError, match="include 0"):
        BenchQualityConfig(shares=[0.3, 0.6], tune_share=0.3)
    with pytest.raises(ValueError, match="lowmargin_band"):
        BenchQualityConfig(lowmargin_band=[0.5, 1.5])
    with pytest.raises(ValueError, match="uses tuned drdo"):
        BenchQualityConfig(methods=["dpo"], controls=["drdo_true_r"])
    quick = BenchQualityConfig(quick=True, seeds=[3])
    assert quick.seeds == [3] and quick.pairs == 96  # explicit values win over the quick sizes


def test_every_method_starts_from_a_grid_of_the_same_size() -> None:
    from drdo_ray.bench.quality_config import METHODS

    sizes = {m: int(np.prod([len(a.start) for a in spec.axes])) for m, spec in METHODS.items()}
    assert set(sizes.values()) == {4}, sizes
    # The learning rate is an axis of every method, on one ladder.
    assert {next(a.ladder for a in spec.axes if a.name == "lr") for spec in METHODS.values()} == {
        METHODS["dpo"].axes[0].ladder
    }


# ------------------------------------------------------------------ the tuning rule


def test_tuning_extends_an_edge_winner_until_it_is_inside() -> None:
    from drdo_ray.bench.quality_tuning import Axis, tune

    calls = []

    def score(cell):  # peak at lr 1e-2, beta 1 (both beyond the start grid's upper edge)
        calls.append(dict(cell))
        return {0: -((np.log10(cell["lr"]) + 2) ** 2) - (cell["beta"] - 1) ** 2, 1: 0.0}

    axes = [
        Axis("lr", (1e-4, 1e-3, 1e-2, 1e-1), (1e-4, 1e-3)),
        Axis("beta", (0.1, 0.3, 1.0, 3.0), (0.1, 0.3)),
    ]
    result = tune(axes, score, max_extensions=3)
    assert result.winner() == {"lr": 1e-2, "beta": 1.0}
    assert result.values == {"lr": [1e-4, 1e-3, 1e-2, 1e-1], "beta": [0.1, 0.3, 1.0, 3.0]}
    # Round 0 extends both axes, round 1 both again (the winner (1e-2, 1) is at the new edges); then inside.
    assert [(e["round"], e["axis"], e["added"]) for e in result.extensions] == [
        (0, "lr", 1e-2), (0, "beta", 1.0), (1, "lr", 1e-1), (1, "beta", 3.0)
    ]  # fmt: skip
    assert len(calls) == len({tuple(c.values()) for c in calls}) == 16  # each cell scored once
    table = result.as_dict()
    assert (table["start_size"], table["final_size"], table["winner_at_unextendable_edge"]) == (4, 16, [])
    assert table["cells"][0]["mean"] == pytest.approx((score({"lr": 1e-4, "beta": 0.1})[0]) / 2)


def test_tuning_stops_at_the_ladder_end_and_at_the_extension_limit() -> None:
    from drdo_ray.bench.quality_tuning import Axis, tune

    def score(cell):  # always better higher
        return {0: cell["lr"] + cell["gamma"]}

    axes = [Axis("lr", (1.0, 2.0, 3.0, 4.0, 5.0), (1.0, 2.0)), Axis("gamma", (0.0, 1.0, 2.0), (1.0, 2.0))]
    result = tune(axes, score, max_extensions=2)
    assert result.values == {"lr": [1.0, 2.0, 3.0, 4.0], "gamma": [1.0, 2.0]}
    assert result.winner() == {"lr": 4.0, "gamma": 2.0}
    assert {(u["axis"], u["why"]) for u in result.unextended} == {
        ("lr", "extension limit"),
        ("gamma", "end of the ladder"),
    }
    with pytest.raises(ValueError, match="adjacent rungs"):
        Axis("lr", (1.0, 2.0, 3.0), (1.0, 3.0))


# ------------------------------------------------------------------ the statistics


def test_paired_statistics_match_a_hand_computation() -> None:
    from drdo_ray.bench.quality_stats import paired_difference, robustness_effect, t_interval

    # Three seeds, two prompts x one sample each: per-seed means A = 2, 1, 3 and B = 1, 1, 1.
    a = {0: np.array([2.0, 2.0]), 1: np.array([0.5, 1.5]), 2: np.array([3.0, 3.0])}
    b = {0: np.array([1.0, 1.0]), 1: np.array([1.0, 1.0]), 2: np.array([0.5, 1.5])}
    out = paired_difference(a, b, n_boot=200, label="x")
    # Differences 1, 0, 2: mean 1, sd 1, t(0.975, 2) = 4.303, half-width 4.303 / sqrt(3) = 2.4843.
    assert out["per_seed"] == {"0": 1.0, "1": 0.0, "2": 2.0}
    assert (out["mean"], out["sd"], out["n"]) == (1.0, 1.0, 3)
    assert out["ci95"] == pytest.approx([1 - 2.48434, 1 + 2.48434], abs=1e-4)
    assert out["positive_seeds"] == 2
    # Samples paired in order: (2,1) (2,1) win win; (0.5,1) loss, (1.5,1) win; (3,0.5) (3,1.5) win win.
    assert out["samples"] == {"n": 6, "wins": 5, "ties": 0, "losses": 1, "win_rate": 5 / 6}
    lo, hi = out["bootstrap_ci95"]
    assert 0.0 <= lo <= 1.0 <= hi <= 2.0  # resampled means of {1, 0, 2} stay within their range
    assert t_interval([4.0])["ci95"] is None
    # Robustness: (row(s) - row(0)) - (base(s) - base(0)) per seed.
    row = {"0": {0: 1.0, 1: 2.0}, "ties:0.6": {0: 0.5, 1: 2.0}}
    base = {"0": {0: 1.0, 1: 1.0}, "ties:0.6": {0: 0.0, 1: 0.0}}
    eff = robustness_effect(row, base, "ties:0.6", "0")
    assert eff["per_seed"] == {"0": 0.5, "1": 1.0} and eff["mean"] == 0.75
    assert eff["ci95"] == pytest.approx(
        [0.75 - 12.706 * 0.35355 / 2**0.5, 0.75 + 12.706 * 0.35355 / 2**0.5], abs=1e-3
    )


# ------------------------------------------------------------------ end to end


def test_bench_quality_quick_end_to_end(tmp_path) -> None:
    from drdo_ray.cli import main

    out = tmp_path / "bq"
    main(["bench", "quality", "--quick", "--out", str(out)])
    report = json.loads((out / "bench_quality.json").read_text())
    assert (out / "bench_quality.png").stat().st_size > 1000
    conds = ["0", "ties:0.6", "lowmargin:0.6"]
    assert report["conditions"] == conds and report["protocol"] == "v3"
    tuned = ["sft_chosen", "dpo", "edpo", "drdo", "drdo_minus_r"]
    controls = ["drdo_paper", "drdo_paper_sum", "drdo_true_r", "minus_r_plus_distill", "dpo_reseed"]
    assert report["rows"] == ["sft", *tuned, *controls]
    # The reported seeds never include a tuning seed, and every cell has one value per reported seed.
    assert report["seeds"] == [0] and report["tune_seeds"] == [100]
    for row in report["rows"]:
        for c in conds:
            assert list(report["mean_true_reward"][row][c]["per_seed"]) == ["0"]
    for m in tuned:
        assert all(list(cell["per_seed"]) == ["100"] for cell in report["tuning"]["methods"][m]["cells"])
        assert report["tuned_hyperparameters"][m] in [
            c["hyperparameters"] for c in report["tuning"]["methods"][m]["cells"]
        ]
    assert report["tuning"]["grid_sizes"] == {m: {"start": 4, "final": 4} for m in tuned}
    assert report["tuning"]["condition"] == "lowmargin:0.6"
    # Fixed steps: every row trained the same number of optimizer steps in every condition.
    assert {s for by_cond in report["training_steps"].values() for v in by_cond.values() for s in v} == {6}
    for c in conds:
        d = report["data"][c][0]
        assert d["pairs"] == 96 and d["steps"] == 6
        assert d["nondeterministic_share"] == pytest.approx(0 if c == "0" else 0.6, abs=0.01)
    assert report["data"]["lowmargin:0.6"][0]["lowmargin_abs_delta_min"] >= 0.5
    assert report["data"]["lowmargin:0.6"][0]["lowmargin_abs_delta_max"] <= 1.0
    assert report["data"]["ties:0.6"][0]["tie_abs_delta_max"] == 0.0
    # Paired against DPO and SFT: the per-seed difference is the difference of the rows' means.
    mean = report["mean_true_reward"]
    for row in ("drdo", "sft_chosen", "dpo_reseed"):
        cell = report["vs_dpo"][row]["ties:0.6"]
        assert cell["per_seed"]["0"] == pytest.approx(
            mean[row]["ties:0.6"]["mean"] - mean["dpo"]["ties:0.6"]["mean"]
        )
        test_prompts = len(syn.split_prompts(0)["test"])
        assert cell["samples"]["n"] == test_prompts * 4 * 1  # prompts x temperatures x samples
    assert set(report["vs_sft"]) == set(report["rows"]) - {"sft"}
    assert set(report["vs_sft_chosen"]) == set(report["rows"]) - {"sft_chosen"}
    eff = report["robustness_vs_dpo"]["drdo"]["lowmargin:0.6"]["mean"]
    expected = (mean["drdo"]["lowmargin:0.6"]["mean"] - mean["drdo"]["0"]["mean"]) - (
        mean["dpo"]["lowmargin:0.6"]["mean"] - mean["dpo"]["0"]["mean"]
    )
    assert eff == pytest.approx(expected)
    # The paper row runs the paper's settings; the noise-floor row is DPO's recipe on another training seed.
    assert report["paper_drdo"] == {
        "alpha": 0.1,
        "gamma": 2.0,
        "distill_weight": 1.0,
        "distill_trunk": "full",
        "lr": 5e-4,
    }
    # DRDO's step-0 diagnostics: both terms move the trunk under the paper's settings.
    grads = report["drdo_step0_term_gradients"]["0"]["drdo_paper"]
    assert grads["term_grad_norm_distill"] > 0 and grads["term_grad_norm_contrastive"] > 0
    # Behaviour: SFT learned the language far above the random-init model.
    ref = report["reference_true_reward"]
    assert ref["sft"] > ref["random_init"] + 3
    acc = report["oracle_accuracy"]["0"]
    assert set(acc) == {"deterministic", "lowmargin"} and all(0 <= v["mean"] <= 1 for v in acc.values())
