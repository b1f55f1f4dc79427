"""`drdo-ray bench quality`: the synthetic true reward (hand-checked values), the labelling's
controlled fractions, and one minimal end-to-end run through the CLI."""

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


@pytest.mark.parametrize(("nondet", "flip"), [(0.0, 0.0), (0.3, 0.1), (0.6, 0.25)])
def test_labelling_hits_the_requested_fractions(nondet: float, flip: float) -> None:
    rng = np.random.default_rng(1)
    n = 400
    prompts = syn.make_prompts(n, rng)
    cands = [[syn.demonstration(p, rng) for _ in range(4)] for p in prompts]
    rewards = [[syn.true_reward(p, y) for y in ys] for p, ys in zip(prompts, cands)]
    pairs = syn.label_pairs(
        rewards,
        nondeterministic=nondet,
        flip=flip,
        rng=np.random.default_rng(7),
        tie_eps=0.25,
        responses=cands,
    )
    assert len(pairs) == n
    assert sum(q.nondeterministic for q in pairs) == round(nondet * n)
    assert sum(q.flipped for q in pairs) == round(flip * n)
    for q in pairs:
        r = rewards[q.prompt]
        # delta is r*(chosen) - r*(rejected), the constructed permutation (-1) scoring like its source.
        rc = r[q.chosen] if q.chosen >= 0 else r[q.rejected]
        rr = r[q.rejected] if q.rejected >= 0 else r[q.chosen]
        assert q.delta == pytest.approx(rc - rr)
        if q.nondeterministic:
            assert abs(q.delta) <= 0.25 and q.p_first == pytest.approx(0.5, abs=0.07)
        elif max(r) - min(r) > 0.25:  # otherwise no pair of this prompt has a direction
            assert abs(q.delta) > 0.25
    det = [q for q in pairs if not q.nondeterministic]
    # Deterministic labels follow r* unless flipped or drawn against a small margin.
    agree = np.mean([(q.delta > 0) != q.flipped for q in det])
    assert agree > 0.8
    # Seeded: the same rng seed gives the same labels.
    again = syn.label_pairs(
        rewards,
        nondeterministic=nondet,
        flip=flip,
        rng=np.random.default_rng(7),
        tie_eps=0.25,
        responses=cands,
    )
    assert again == pairs


def test_nondeterministic_labels_are_coin_flips() -> None:
    # All pairs tie exactly: every label is Bernoulli(0.5), so "first wins" is ~half.
    rewards = [[1.0, 1.0, 1.0]] * 2000
    pairs = syn.label_pairs(rewards, nondeterministic=1.0, flip=0.0, rng=np.random.default_rng(3))
    first = np.mean([q.chosen < q.rejected for q in pairs])
    assert 0.45 < first < 0.55
    assert all(q.delta == 0 for q in pairs)


def test_bench_quality_end_to_end(tmp_path, capsys) -> None:
    from drdo_ray.cli import main

    out = tmp_path / "bq"
    sets = [
        "sft_rows=512",
        "sft_steps=300",
        "pairs=1024",
        "heldout_pairs=128",
        "eval_prompts=16",
        "oracle_steps=64",
        "align_steps=8",
        "batch_size=32",
        "bootstrap=200",
        "candidates=2",
        "threads=2",
    ]
    argv = ["bench", "quality", "--out", str(out), "--seeds", "1", "--fractions", "0.3"]
    for item in sets:
        argv += ["--set", item]
    main(argv)
    report = json.loads((out / "bench_quality.json").read_text())
    assert (out / "bench_quality.png").stat().st_size > 1000
    methods = ["drdo", "dpo", "ipo", "edpo", "sft"]
    assert set(report["mean_true_reward"]) == set(methods)
    assert all(set(v) == {"0.3"} for v in report["mean_true_reward"].values())
    assert set(report["drdo_win_rate"]) == {"dpo", "ipo", "edpo"}
    for base in ("dpo", "ipo", "edpo"):
        cell = report["drdo_win_rate"][base]["0.3"]
        assert 0 <= cell["ci95"][0] <= cell["win_rate"] <= cell["ci95"][1] <= 1
        assert cell["n"] == 16 * 4 * 2  # prompts x temperatures x samples, paired
    assert set(report["oracle_accuracy"]) == {"0.3"}
    data = report["data"]["0.3"][0]
    assert data["nondeterministic"] == pytest.approx(0.3, abs=0.01)
    assert data["flipped"] == pytest.approx(0.1, abs=0.01)
    # Behaviour: SFT learned the language (far above the random-init model's true reward), and
    # the Oracle, trained on noisy labels, orders held-out pairs by the true reward above chance.
    ref = report["reference_true_reward"]
    assert ref["sft"] > ref["random_init"] + 5
    assert report["oracle_accuracy"]["0.3"] > 0.6
