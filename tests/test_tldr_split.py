"""The TL;DR easy/hard split on a table whose percentiles are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from drdo_ray.data.tldr_split import assign, in_split, normalized_edit_distance, split_stats, thresholds

NAN = float("nan")
# 7 rated rows + 1 unrated. Sorted rated confidence: 1 2 3 5 6 8 9 -> median 5 (4th of 7).
# Rated distances sorted: .05 .10 .20 .30 .40 .50 .60 -> median .30.
CONF = np.array([9, 1, 5, 8, 2, 6, 3, NAN])
DIST = np.array([0.50, 0.05, 0.30, 0.10, 0.40, 0.60, 0.20, 0.90])


def test_thresholds_by_hand():
    assert thresholds(CONF, DIST) == (5.0, 0.30)  # the unrated row's 0.90 is not counted


def test_assignment_and_tie_rule():
    labels = assign(CONF, DIST, 5.0, 0.30)
    # row 0: 9>=5, .5>=.3 easy | row 1: 1<5,.05<.3 hard | row 2: ties on both -> high: easy
    # row 3: 8>=5, .1<.3 mixed | row 4: 2<5, .4>=.3 mixed | row 5: easy | row 6: hard | row 7: unrated
    assert labels.tolist() == ["easy", "hard", "easy", "mixed", "mixed", "easy", "hard", "unrated"]
    assert in_split(labels, "full").all()
    assert in_split(labels, "easy").sum() == 3 and in_split(labels, "hard").sum() == 2


def test_split_stats_by_hand():
    stats = split_stats(CONF, DIST, assign(CONF, DIST, 5.0, 0.30))
    assert stats["easy"] == {
        "count": 3,
        "mean_confidence": round((9 + 5 + 6) / 3, 4),
        "mean_distance": 0.4667,
    }
    assert stats["hard"] == {"count": 2, "mean_confidence": 2.0, "mean_distance": 0.125}
    assert stats["full"]["count"] == 8
    assert stats["full"]["mean_confidence"] == round(34 / 7, 4)  # over rated rows only
    assert stats["full"]["mean_distance"] == pytest.approx(np.mean(DIST), abs=1e-4)


def test_even_count_median_interpolates():
    conf = np.array([1.0, 2.0, 3.0, 4.0])
    dist = np.array([0.1, 0.2, 0.3, 0.4])
    assert thresholds(conf, dist) == (2.5, pytest.approx(0.25))


def test_no_rated_rows_is_an_error():
    with pytest.raises(ValueError, match="confidence"):
        thresholds(np.array([NAN]), np.array([0.1]))


def test_normalized_edit_distance():
    assert normalized_edit_distance([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert normalized_edit_distance([1, 2, 3, 4], [1, 9, 3]) == 0.5  # 1 substitution + 1 deletion over 4
    assert normalized_edit_distance([], []) == 0.0
    assert normalized_edit_distance([], [5, 6]) == 1.0
