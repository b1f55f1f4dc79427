"""`drdo-ray bench quality --regime online`: the pair rule, the online learning-rate axis, the round
statistics against hand values, the regime's settings, and a quick run end to end (its per-round
rewards, paired differences and steps read back from the JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_best_vs_worst_takes_the_first_of_equals_and_pairs_a_flat_prompt_with_itself() -> None:
    from drdo_ray.bench.quality_online import best_vs_worst

    rewards = np.array([[0.1, 2.0, -1.0, 2.0], [3.0, 3.0, 3.0, 3.0], [-0.5, -2.0, -2.0, 0.0]])
    best, worst = best_vs_worst(rewards)
    assert best.tolist() == [1, 0, 3] and worst.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="samples ≥ 2"):
        best_vs_worst(np.zeros((3, 1)))


def test_online_learning_rate_axis_is_centred_on_the_offline_winner() -> None:
    from drdo_ray.bench.quality_config import LR
    from drdo_ray.bench.quality_online import online_lr_axis

    assert online_lr_axis(5e-4).start == (1.5e-4, 5e-4, 1.5e-3)
    assert online_lr_axis(LR[0]).start == LR[:2] and online_lr_axis(LR[-1]).start == LR[-2:]


def test_round_statistics_match_hand_values() -> None:
    from drdo_ray.bench.quality_online import round_stats

    scores = np.array([[1.0, 3.0], [0.0, 0.0]])
    true = np.array([[2.0, 4.0], [1.0, 1.0]])
    cols = {"true_chosen": np.array([4.0, 1.0]), "true_rejected": np.array([2.0, 1.0])}
    stats = round_stats(scores, true, cols, identical=[False, True])
    assert stats == {
        "pairs": 2.0,
        "sample_oracle_reward": 1.0,
        "sample_true_reward": 2.0,
        "chosen_true_reward": 2.5,
        "identical_pair_share": 0.5,
        "true_tie_share": 0.5,
        "oracle_agrees_with_true": 1.0,  # of the one pair whose r* differ
    }


def test_online_regime_settings() -> None:
    from drdo_ray.bench.quality_config import BenchQualityConfig

    cfg = BenchQualityConfig(regime="online")
    # Fresh report seeds, apart from the offline protocol's and from the tuning seeds.
    assert cfg.seeds == [20, 21, 22, 23, 24] and not set(cfg.seeds) & set(BenchQualityConfig().seeds)
    assert cfg.rows() == [
        "sft_chosen",
        "dpo",
        "drdo",
        "drdo_minus_r",
        "drdo_paper",
        "minus_r_plus_distill",
        "dpo_reseed",
    ]
    # Three rounds train the steps of the offline pairs.
    assert cfg.online_rounds * cfg.online_prompts == cfg.pairs
    with pytest.raises(ValueError, match="does not run edpo"):
        BenchQualityConfig(regime="online", methods=["dpo", "edpo"])
    with pytest.raises(ValueError, match="tuned_from is a setting of the online regime"):
        BenchQualityConfig(tuned_from="x.json")


def test_bench_quality_online_quick_end_to_end(tmp_path) -> None:
    from drdo_ray.cli import main

    out, offline = tmp_path / "bqo", REPO / "benchmarks" / "cpu-bench-quality-v3.json"
    main(
        ["bench", "quality", "--regime", "online", "--quick", "--tuned-from", str(offline), "--out", str(out)]
    )
    report = json.loads((out / "bench_quality.json").read_text())
    assert (out / "bench_quality.png").stat().st_size > 1000
    assert report["protocol"] == "v3-online" and report["seeds"] == [0]
    rows = ["sft_chosen", "dpo", "drdo"]
    online = ["online_sft_best", "online_dpo", "online_drdo"]
    assert report["rows"] == ["sft", *rows, *online]
    # The offline settings are the given file's; online, only the learning rate moved.
    given = json.loads(offline.read_text())["tuned_hyperparameters"]
    assert report["tuned_hyperparameters"] == {m: given[m] for m in rows}
    for m in rows:
        moved = report["tuned_online_hyperparameters"][m]
        assert {k: v for k, v in moved.items() if k != "lr"} == {
            k: v for k, v in given[m].items() if k != "lr"
        }
        tuning = report["tuning"]["online"][m]
        assert tuning["start_size"] == 3 and moved["lr"] in tuning["axes"]["lr"]["final"]
    assert report["tuning"]["offline_source"].startswith("cpu-bench-quality-v3.json")
    # Mean r* per round: round 0 is SFT, the last round is the row's reported value.
    mean = report["mean_true_reward"]
    for row in online:
        by_round = report["mean_true_reward_by_round"][row]
        assert len(by_round) == 3  # SFT and 2 rounds
        assert by_round[0]["mean"] == pytest.approx(mean["sft"]["mean"])
        assert by_round[-1]["mean"] == pytest.approx(mean[row]["mean"])
        for stats in report["rounds"][row]:
            assert stats["pairs"] == 64 and 0 <= stats["identical_pair_share"] <= 1
            assert 0 <= stats["oracle_agrees_with_true"] <= 1
            # Equal steps: 2 epochs of 64 pairs in batches of 32, every round of every row.
            assert stats["train_step"] == 4
    # Paired differences are differences of the rows' per-seed means; online vs offline per method.
    for row in ("online_drdo", "drdo", "online_sft_best"):
        assert report["vs_online_dpo"][row]["per_seed"]["0"] == pytest.approx(
            mean[row]["mean"] - mean["online_dpo"]["mean"]
        )
    assert set(report["online_vs_offline"]) == set(online)
    assert report["online_vs_offline"]["online_drdo"]["mean"] == pytest.approx(
        mean["online_drdo"]["mean"] - mean["drdo"]["mean"]
    )
    assert report["training_steps"] == {"offline": 6, "online_per_round": 4, "online": 8}


def test_a_perfect_oracle_labels_the_rounds_with_r_star(tmp_path) -> None:
    from drdo_ray.cli import main

    out, offline = tmp_path / "bqo", REPO / "benchmarks" / "cpu-bench-quality-v3.json"
    args = ["--methods", "dpo", "--controls", "dpo_reseed", "--online-rounds", "1", "--online-oracle", "true"]
    main(
        [
            "bench",
            "quality",
            "--regime",
            "online",
            "--quick",
            "--tuned-from",
            str(offline),
            *args,
            "--out",
            str(out),
        ]
    )
    (stats,) = json.loads((out / "bench_quality.json").read_text())["rounds"]["online_dpo"]
    # The "Oracle" is r*: its rewards are the samples' r*, and it never disagrees with r*.
    assert stats["sample_oracle_reward"] == pytest.approx(stats["sample_true_reward"])
    assert stats["oracle_agrees_with_true"] == 1.0


def test_response_rewards_in_one_pass_equal_the_pair_path(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from drdo_ray.bench.toy_lm import Words, build_model, pair_scores, response_rewards
    from drdo_ray.models import PolicyWithRewardHead

    words = Words()
    model_dir = build_model(tmp_path / "m", words, seed=0, hidden_size=32, num_layers=1)
    oracle = PolicyWithRewardHead(AutoModelForCausalLM.from_pretrained(model_dir)).eval()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 50, 5).tolist() for _ in range(40)]
    responses = [[*rng.integers(3, 50, int(rng.integers(1, 12))).tolist(), words.eos] for _ in range(40)]
    got = response_rewards(oracle, prompts, responses, pad_id=words.pad, batch=16)  # across batches
    assert got.shape == (40,) and np.unique(got).size > 1
    np.testing.assert_allclose(
        got, pair_scores(oracle, prompts, responses, responses, pad_id=words.pad)["rw"]
    )
