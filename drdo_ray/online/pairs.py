"""Pairs from scored samples: the rule that turns a prompt's samples and their Oracle rewards
into preference pairs, and the summaries a round records. Pure Python: no Ray, no torch.

A prompt's samples are first reduced to distinct texts (identical texts cannot form a pair; the
first sample index of each text is kept). Then:

- ``best_vs_worst``: one pair per prompt, the highest reward against the lowest (ties broken by
  the lower sample index), when their margin exceeds ``margin``;
- ``margin``: every pair of distinct texts whose reward margin exceeds ``margin``, the higher
  reward chosen.

A prompt that yields no pair is counted under its reason (``one_distinct_response``,
``no_margin``), a sample with a non-finite reward under ``non_finite_reward``: nothing is dropped
without a count."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

import numpy as np

from ..eval.stats import mean_std

PairRule = Literal["best_vs_worst", "margin"]
PAIR_RULES: tuple[str, ...] = ("best_vs_worst", "margin")


@dataclass(frozen=True)
class ScoredSample:
    """One sample of a prompt with its Oracle reward."""

    prompt_id: str
    prompt: str
    chat: bool
    sample_idx: int
    text: str
    reward: float


@dataclass
class PairSet:
    """The pairs of one round and method, and why the prompts without one have none."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    prompts: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> prompts (samples for rewards)

    def summary(self) -> dict[str, Any]:
        margins = [p["score_chosen"] - p["score_rejected"] for p in self.pairs]
        return {
            "prompts": self.prompts,
            "pairs": len(self.pairs),
            "prompts_with_pairs": len({p["prompt_id"] for p in self.pairs}),
            "skipped": dict(sorted(self.skipped.items())),
            "margin": describe(margins),
        }


def _distinct(samples: Sequence[ScoredSample]) -> list[ScoredSample]:
    """The first sample of each distinct text, in sample-index order."""
    seen: set[str] = set()
    kept = []
    for s in sorted(samples, key=lambda s: s.sample_idx):
        if s.text not in seen:
            seen.add(s.text)
            kept.append(s)
    return kept


def _pair(chosen: ScoredSample, rejected: ScoredSample, tag: str) -> dict[str, Any]:
    """A canonical pair row (drdo_ray/data/schema.py) plus the prompt id and sample indices; the
    Oracle's rewards are its scores."""
    return {
        "id": f"{chosen.prompt_id}:{tag}:{chosen.sample_idx}>{rejected.sample_idx}",
        "prompt_id": chosen.prompt_id,
        "prompt": chosen.prompt,
        "chat": chosen.chat,
        "chosen": chosen.text,
        "rejected": rejected.text,
        "chosen_idx": chosen.sample_idx,
        "rejected_idx": rejected.sample_idx,
        "score_chosen": chosen.reward,
        "score_rejected": rejected.reward,
        "split": tag,
    }


def prompt_pairs(
    samples: Sequence[ScoredSample], rule: PairRule, margin: float, tag: str
) -> tuple[list[dict[str, Any]], str | None]:
    """(pairs, None) or ([], the reason this prompt gives none), for one prompt's samples."""
    distinct = _distinct(samples)
    if len(distinct) < 2:
        return [], "one_distinct_response"
    if rule == "best_vs_worst":
        best = max(distinct, key=lambda s: (s.reward, -s.sample_idx))
        worst = min(distinct, key=lambda s: (s.reward, s.sample_idx))
        if best.reward - worst.reward <= margin:
            return [], "no_margin"
        return [_pair(best, worst, tag)], None
    if rule != "margin":
        raise ValueError(f"unknown pair rule {rule!r}; one of {', '.join(PAIR_RULES)}")
    pairs = []
    for a, b in combinations(distinct, 2):
        if abs(a.reward - b.reward) > margin:
            chosen, rejected = (a, b) if a.reward > b.reward else (b, a)
            pairs.append(_pair(chosen, rejected, tag))
    return (pairs, None) if pairs else ([], "no_margin")


def build_pairs(samples: Iterable[ScoredSample], rule: PairRule, margin: float, tag: str) -> PairSet:
    """Every prompt's pairs, prompts in first-seen order; ``tag`` names the round (the rows'
    ``split`` and part of their ids, which are unique within a round)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    by_prompt: dict[str, list[ScoredSample]] = {}
    result = PairSet()
    for s in samples:
        if not math.isfinite(s.reward):
            result.skipped["non_finite_reward"] += 1
            continue
        by_prompt.setdefault(s.prompt_id, []).append(s)
    result.prompts = len(by_prompt)
    for group in by_prompt.values():
        pairs, reason = prompt_pairs(group, rule, margin, tag)
        result.pairs += pairs
        if reason:
            result.skipped[reason] += 1
    return result


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, std and the quartiles of ``values``, NaN ignored (the report's reward
    distributions)."""
    out: dict[str, Any] = dict(mean_std(values))
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size:
        q = np.quantile(finite, [0.0, 0.25, 0.5, 0.75, 1.0])
        out |= dict(zip(("min", "q25", "median", "q75", "max"), map(float, q)))
    return out
