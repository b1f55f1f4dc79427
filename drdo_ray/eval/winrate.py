"""`drdo-ray eval winrate`: the Oracle win rate of sample set A over sample set B
(docs/evaluation.md; paper Fig. 2).

Both sets (and the prompts' reference responses) are scored with the frozen Oracle on a Ray
Data actor pool, the same model-loading and one-pass reward read-out as `drdo-ray score`.
A sample of A wins when ``r*(x, y_A) > r*(x, y_B)``; pairs match on
``(prompt_id, temperature, sample_idx)``.

    OUT/winrate.json   wins, ties, losses, win_rate (ties half), ci95, mean rewards, reward
                       advantage over the references, by_temperature, provenance
    OUT/pairs.jsonl    one row per pair: key, prompt_tokens, reward_a, reward_b, reward_ref, outcome
    OUT/ood.json|.md|.png   win rate by prompt length (App. F.2)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console

from .. import storage
from ..artifacts import check_model, device_dtype, fingerprint, local_model, pad_id, resolve
from ..config import ActorPool, WinrateConfig
from ..errors import UserError
from . import stats
from .inference import check_tokenizer, map_with_actors, text_uid
from .results import write_result
from .samples import KEY, REFERENCE, Pairing, SampleSet, load_sides, pair


class SampleScorer:
    """Ray Data callable class: the Oracle and its tokenizer load once per actor. Texts become
    ids through ``data/tokenize.py`` exactly as in training; the reward is read at the last
    token (EOS appended, as every training response ends with one)."""

    def __init__(self, oracle: str, *, dtype: str, max_length: int | None) -> None:
        from transformers import AutoTokenizer

        from ..models import PolicyWithRewardHead

        device, torch_dtype = device_dtype(dtype)
        local = local_model(oracle)
        self.model = PolicyWithRewardHead.from_pretrained(local, torch_dtype=torch_dtype).to(device).freeze()
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.pad_id = pad_id(local)
        self.max_length = max_length or getattr(self.model.config, "max_position_embeddings", None)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from ..data.tokenize import encode_prompt, encode_response
        from ..scoring import sequence_rewards

        prompts = [
            encode_prompt(self.tokenizer, p, chat=bool(c)) for p, c in zip(batch["prompt"], batch["chat"])
        ]
        responses = [encode_response(self.tokenizer, t) for t in batch["text"]]
        lengths = [len(p) for p in prompts]
        truncated = []
        for i, ids in enumerate(prompts):
            # Generation prompts were length-filtered at prepare time; an over-long one keeps its
            # end (the part next to the response) and is counted rather than failing the job.
            cut = self.max_length is not None and len(ids) >= self.max_length
            if cut:
                prompts[i] = ids[-(self.max_length // 2) :]
            truncated.append(
                cut or (self.max_length is not None and len(prompts[i]) + len(responses[i]) > self.max_length)
            )
        rewards = sequence_rewards(
            self.model, prompts, responses, pad_id=self.pad_id, max_length=self.max_length
        )
        return pd.DataFrame(
            {
                "uid": batch["uid"].to_numpy(),
                "reward": rewards,
                "prompt_tokens": lengths,
                "response_tokens": [len(r) for r in responses],
                "truncated": truncated,
            }
        )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _side_stats(frame: pd.DataFrame, *, has_reference_side: bool) -> dict[str, Any]:
    """Mean rewards and the reward advantage over the references for one group of pairs."""
    result: dict[str, Any] = {
        "mean_reward_a": stats.mean_std(frame["reward_a"])["mean"],
        "mean_reward_b": stats.mean_std(frame["reward_b"])["mean"],
        "mean_margin": stats.mean_std(frame["reward_a"] - frame["reward_b"])["mean"],
    }
    with_ref = frame[frame["reward_ref"].notna()]
    advantage: dict[str, Any] = {"n": len(with_ref)}
    if len(with_ref):
        advantage["a"] = stats.mean_std(with_ref["reward_a"] - with_ref["reward_ref"])
        if not has_reference_side:
            advantage["b"] = stats.mean_std(with_ref["reward_b"] - with_ref["reward_ref"])
    result["reward_advantage"] = advantage
    return result


def compute_winrate(
    pairs: pd.DataFrame,
    *,
    tie_margin: float = 0.0,
    n_boot: int = 2000,
    seed: int = 0,
    b_is_reference: bool = False,
) -> dict[str, Any]:
    """Statistics of scored pairs (columns: the key, ``reward_a``, ``reward_b``, ``reward_ref``
    (NaN where a prompt has none)): adds ``outcome`` to ``pairs`` in place and returns the
    winrate.json body (overall + ``by_temperature``). Pure: no Ray."""
    outcomes = stats.outcomes_from_rewards(pairs["reward_a"], pairs["reward_b"], tie_margin=tie_margin)
    pairs["outcome"] = [stats.OUTCOME_NAMES[int(o)] for o in outcomes]
    clusters = pairs["prompt_id"].to_numpy()
    result: dict[str, Any] = {
        **stats.summarize(outcomes, clusters, n_boot=n_boot, seed=seed, label="all"),
        **_side_stats(pairs, has_reference_side=b_is_reference),
    }
    temps = pairs["temperature"].map(stats.temperature_key)
    grouped = stats.by_group(outcomes, temps.tolist(), clusters, n_boot=n_boot, seed=seed)
    for key, summary in grouped.items():
        summary.update(_side_stats(pairs[temps == key], has_reference_side=b_is_reference))
    result["by_temperature"] = grouped
    return result


@dataclass
class WinratePlan:
    """What a win-rate run compares: the paired samples, the Oracle, and every distinct
    (prompt, response) to score once (A's, B's and the prompts' reference responses)."""

    a: SampleSet
    b: SampleSet
    b_is_reference: bool
    pairing: Pairing
    oracle: str
    texts: pd.DataFrame  # uid, prompt, chat, text

    @property
    def pairs(self) -> pd.DataFrame:
        return self.pairing.pairs


def plan_winrate(cfg: WinrateConfig) -> WinratePlan:
    """Load and pair the two sides, check the Oracle, list the responses to score."""
    a, b, b_is_reference = load_sides(cfg.a, cfg.b, a_name=cfg.a_name, b_name=cfg.b_name)
    pairing = pair(a, b)
    pairs = pairing.pairs
    if pairs.empty:
        what = (
            "no A sample has a reference response"
            if b_is_reference
            else "no (prompt_id, temperature, sample_idx) in common"
        )
        raise UserError(f"nothing to compare: {what} ({a.path} vs {b.path})")
    oracle = resolve(cfg.oracle)
    check_model(oracle, role="oracle", oracle=True)
    check_tokenizer(oracle, role="oracle")
    pairs["uid_a"] = [text_uid(p, c, t) for p, c, t in zip(pairs["prompt"], pairs["chat"], pairs["text_a"])]
    pairs["uid_b"] = [text_uid(p, c, t) for p, c, t in zip(pairs["prompt"], pairs["chat"], pairs["text_b"])]
    pairs["uid_ref"] = [
        text_uid(p, c, r) if isinstance(r, str) else None
        for p, c, r in zip(pairs["prompt"], pairs["chat"], pairs["reference"])
    ]
    columns = ["uid", "prompt", "chat", "text"]
    sides = (
        pairs[["uid_a", "prompt", "chat", "text_a"]].set_axis(columns, axis=1),
        pairs[["uid_b", "prompt", "chat", "text_b"]].set_axis(columns, axis=1),
        pairs.loc[pairs["uid_ref"].notna(), ["uid_ref", "prompt", "chat", "reference"]].set_axis(
            columns, axis=1
        ),
    )
    texts = pd.concat(sides).drop_duplicates("uid").reset_index(drop=True)
    return WinratePlan(a, b, b_is_reference, pairing, oracle, texts)


def oracle_rewards(
    texts: pd.DataFrame, oracle: str, pool: ActorPool, max_length: int | None, console: Console
) -> pd.DataFrame:
    """The reward (and prompt length, truncation) of every row of ``texts`` (uid, prompt, chat,
    text; uids distinct), by uid, from the Oracle on a Ray Data actor pool of ``pool``'s settings."""
    return map_with_actors(
        texts,
        SampleScorer,
        args=(oracle,),
        kwargs={"dtype": pool.dtype, "max_length": max_length},
        batch_size=pool.batch_size,
        num_actors=pool.num_actors,
        num_gpus=pool.num_gpus_per_actor,
        console=console,
    ).set_index("uid")


def score_texts(cfg: WinrateConfig, plan: WinratePlan, console: Console) -> pd.DataFrame:
    """Every distinct response's reward by uid (A's, B's and the references)."""
    return oracle_rewards(plan.texts, plan.oracle, cfg, cfg.max_length, console)


def _pair_rows(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """pairs.jsonl: one row per scored pair."""
    return [
        {
            "prompt_id": r.prompt_id,
            "temperature": _finite(r.temperature),
            "sample_idx": int(r.sample_idx),
            "prompt_tokens": int(r.prompt_tokens),
            "reward_a": float(r.reward_a),
            "reward_b": float(r.reward_b),
            "reward_ref": _finite(r.reward_ref),
            "outcome": r.outcome,
        }
        for r in pairs.itertuples()
    ]


def report_winrate(
    cfg: WinrateConfig, plan: WinratePlan, scored: pd.DataFrame, *, started: float, scoring_s: float
) -> dict[str, Any]:
    """Rewards onto the pairs, the statistics, and OUT/ (winrate.json, pairs.jsonl, ood.*)."""
    from .ood import ood_result, write_ood

    pairs = plan.pairs
    pairs["reward_a"] = pairs["uid_a"].map(scored["reward"])
    pairs["reward_b"] = pairs["uid_b"].map(scored["reward"])
    pairs["reward_ref"] = pairs["uid_ref"].map(scored["reward"]).astype(float)
    pairs["prompt_tokens"] = pairs["uid_a"].map(scored["prompt_tokens"]).astype(int)
    counts = compute_winrate(
        pairs,
        tie_margin=cfg.tie_margin,
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
        b_is_reference=plan.b_is_reference,
    )
    storage.makedirs(cfg.out)
    pair_rows = _pair_rows(pairs)
    storage.write_jsonl(storage.join(cfg.out, "pairs.jsonl"), pair_rows)
    ood = ood_result(
        pair_rows,
        width=cfg.bin_width,
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
        at_temperature=cfg.ood_at_temperature,
        source="winrate",
        a=plan.a.name,
        b=plan.b.name,
        tokenizer=plan.oracle,
    )
    a, b = plan.a, plan.b
    result = {
        "kind": "winrate",
        "a": a.describe(),
        "b": b.describe() if not plan.b_is_reference else {"name": b.name, "samples": REFERENCE},
        "oracle": {"path": plan.oracle, "fingerprint": fingerprint(plan.oracle)},
        **counts,
        "unpaired": {
            "a": plan.pairing.unpaired_a,
            "b": 0 if plan.b_is_reference else plan.pairing.unpaired_b,
        },
        "scored_responses": len(plan.texts),
        "truncated_responses": int(scored["truncated"].sum()) if "truncated" in scored else 0,
        "tie_margin": cfg.tie_margin,
        "bootstrap": {"n": cfg.bootstrap, "seed": cfg.seed, "level": stats.DEFAULT_LEVEL, "unit": "prompt"},
        "pair_key": KEY,
        "scoring_s": round(scoring_s, 3),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "outputs": {
            "winrate": storage.join(cfg.out, "winrate.json"),
            "pairs": storage.join(cfg.out, "pairs.jsonl"),
            **write_ood(cfg.out, ood),
        },
    }
    write_result(storage.join(cfg.out, "winrate.json"), result)
    return result


def run_winrate(cfg: WinrateConfig, console: Console | None = None) -> dict[str, Any]:
    """Plan (pair, check), score every distinct response on the Oracle's actor pool, report
    (count, write OUT/); returns the winrate.json content."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    plan = plan_winrate(cfg)
    console.print(
        f"[bold]eval winrate[/] {plan.a.name} vs {plan.b.name}: {len(plan.pairs)} pairs, {len(plan.texts)} "
        f"distinct responses scored by {plan.oracle} ({cfg.num_actors} actor(s))"
    )
    scoring_started = time.perf_counter()
    scored = score_texts(cfg, plan, console)
    return report_winrate(cfg, plan, scored, started=started, scoring_s=time.perf_counter() - scoring_started)
