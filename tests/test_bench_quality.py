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


@pytest.mark.parametrize("flip", [0.0, 0.1, 0.25])
def test_deterministic_pairs_are_separated_bt_labelled_and_flip_exactly(flip: float) -> None:
    pool = _pool()
    pairs = syn.deterministic_pairs(
        pool, 400, rng=np.random.default_rng(3), tie_eps=0.25, bt_scale=1.0, flip=flip
    )
    assert len(pairs) == 400
    assert sum(q.flipped for q in pairs) == round(flip * 400)
    for q in pairs:
        assert not q.tie and abs(q.delta) > 0.25
        assert q.delta == pytest.approx(
            syn.true_reward(q.prompt, q.chosen) - syn.true_reward(q.prompt, q.rejected)
        )
        assert list(q.chosen) in pool[q.prompt] and list(q.rejected) in pool[q.prompt]
    # Unflipped labels follow r* with the Bradley-Terry probability: mostly, not always.
    unflipped = [q.delta > 0 for q in pairs if not q.flipped]
    assert 0.75 < np.mean(unflipped) < 0.99
    flipped = [q.delta > 0 for q in pairs if q.flipped]
    if flipped:
        assert np.mean(flipped) < 0.3
    again = syn.deterministic_pairs(
        pool, 400, rng=np.random.default_rng(3), tie_eps=0.25, bt_scale=1.0, flip=flip
    )
    assert again == pairs


def test_tie_pairs_have_no_direction_and_coin_flip_order() -> None:
    pool = _pool()
    ties = syn.tie_pairs(pool, 2000, rng=np.random.default_rng(4), tie_eps=0.25)
    assert all(q.tie and abs(q.delta) <= 0.25 and q.chosen != q.rejected for q in ties)
    # Which of the two is "chosen" is a fair coin: by r*, and by which is longer.
    longer = np.mean([len(q.chosen) > len(q.rejected) for q in ties if len(q.chosen) != len(q.rejected)])
    assert 0.44 < longer < 0.56


@pytest.mark.parametrize(
    ("det", "share", "ties"), [(768, 0.0, 0), (700, 0.3, 300), (768, 0.6, 1152), (100, 0.8, 400)]
)
def test_ties_are_added_so_the_share_is_exact_and_deterministic_pairs_stay(
    det: int, share: float, ties: int
) -> None:
    assert syn.ties_for_share(det, share) == ties
    assert ties / (det + ties) == pytest.approx(share, abs=1e-3)
    with pytest.raises(ValueError, match="share"):
        syn.ties_for_share(det, 1.0)


def test_bench_quality_quick_end_to_end(tmp_path) -> None:
    from drdo_ray.cli import main

    out = tmp_path / "bq"
    main(["bench", "quality", "--quick", "--out", str(out)])
    report = json.loads((out / "bench_quality.json").read_text())
    assert (out / "bench_quality.png").stat().st_size > 1000
    shares = ["0", "0.6"]
    rows = {"drdo", "dpo", "edpo", "drdo_paper", "drdo_true_r", "sft"}
    assert set(report["mean_true_reward"]) == rows
    assert all(set(v) == set(shares) for v in report["mean_true_reward"].values())
    assert set(report["drdo_win_rate"]) == rows - {"drdo"}
    for base, cells in report["drdo_win_rate"].items():
        for s in shares:
            cell = cells[s]
            assert 0 <= cell["ci95"][0] <= cell["win_rate"] <= cell["ci95"][1] <= 1, base
            test_prompts = len(syn.split_prompts(0)["test"])
            assert cell["n"] == test_prompts * 4 * 1  # prompts x temperatures x samples, paired
    # The tuned values come from the grid, and the tuning table records every grid entry.
    assert report["tuned_hyperparameters"]["drdo"] in [
        r["hyperparameters"] for r in report["tuning"]["results"]["drdo"]
    ]
    assert len(report["tuning"]["results"]["drdo"]) == 2
    assert report["tuned_hyperparameters"]["dpo"] == {"beta": 0.1}
    for row in rows - {"sft"}:
        assert report["slope_vs_share"][row]["slope"] == pytest.approx(
            (report["mean_true_reward"][row]["0.6"] - report["mean_true_reward"][row]["0"]) / 0.6
        )
    # Data: the same deterministic pairs at both shares, ties added to reach the share exactly.
    d0, d6 = report["data"]["0"][0], report["data"]["0.6"][0]
    assert d0["deterministic"] == d6["deterministic"] == 96 and d0["nondeterministic"] == 0
    assert d6["nondeterministic_share"] == pytest.approx(0.6, abs=0.01)
    assert d6["max_abs_delta_nondeterministic"] <= 0.25
    assert d0["flipped_share_of_deterministic"] == pytest.approx(0.1, abs=0.011)
    # DRDO's step-0 diagnostics: both terms move the trunk under the paper's settings.
    grads = report["drdo_step0_term_gradients"]["0"]["drdo_paper"]
    assert grads["term_grad_norm_distill"] > 0 and grads["term_grad_norm_contrastive"] > 0
    assert len(report["dpo_convergence"]["0"]["train_reward_accuracy_by_epoch"]) == 2
    # Behaviour: SFT learned the language far above the random-init model.
    ref = report["reference_true_reward"]
    assert ref["sft"] > ref["random_init"] + 3
    # Oracle accuracy: one held-out figure per seed and Oracle (the Oracle and e-DPO's three), averaged.
    detail = report["oracle_accuracy_detail"]["0"]
    assert set(detail) == {"oracle", "oracle-bt0", "oracle-bt1", "oracle-bt2"}
    assert all(len(v) == 1 and 0 <= v[0] <= 1 for v in detail.values())
    assert report["oracle_accuracy"]["0"] == detail["oracle"][0]
