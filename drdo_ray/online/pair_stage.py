"""An online round's pairs step: the Oracle scores every sample of the round's generation on a
Ray Data actor pool (the win rates' scoring actors), the pair rule (drdo_ray/online/pairs.py)
picks the pairs, and `data prepare` (source ``pairs``) tokenizes and length-checks them into a
dataset the score and train stages read as they read any other.

    OUT/scores.jsonl    one row per sample: prompt_id, sample_idx, temperature, text, reward
    OUT/pairs.jsonl     the pairs, canonical rows whose scores are the Oracle's rewards
    OUT/pairs.json      what was read (fingerprints), the pair counts and why prompts gave none,
                        the samples' reward distribution
    DATA/               the prepared pairs (data/*.parquet, rejects.jsonl, stats.json)"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pandas as pd
from rich.console import Console

from .. import storage
from ..artifacts import check_model, fingerprint, resolve, reusable
from ..config import PairsConfig, PrepareConfig
from ..errors import UserError
from ..eval.inference import check_tokenizer, text_uid
from ..eval.samples import load_samples
from .pairs import ScoredSample, build_pairs, describe

PAIRS_FILE = "pairs.json"


def _digest(path: str) -> str:
    with storage.open_binary(path) as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def _request(cfg: PairsConfig, samples_file: str, oracle: str) -> dict[str, Any]:
    return {
        "samples": {"path": cfg.samples, "fingerprint": _digest(samples_file)},
        "oracle": {"path": oracle, "fingerprint": fingerprint(oracle)},
        "pair_rule": cfg.pair_rule,
        "margin": cfg.margin,
        "tag": cfg.tag,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for key in ("samples", "oracle"):
        if (old.get(key) or {}).get("fingerprint") != new[key]["fingerprint"]:
            diffs.append(f"other {key} ({(old.get(key) or {}).get('path')})")
    diffs += [
        f"{key} {old.get(key)}, not {new[key]}"
        for key in ("pair_rule", "margin", "tag")
        if old.get(key) != new[key]
    ]
    return diffs


def score_samples(cfg: PairsConfig, rows: pd.DataFrame, oracle: str, console: Console) -> pd.Series:
    """Each sample's Oracle reward (identical prompt + text scored once), by row."""
    from ..eval.winrate import oracle_rewards

    uids = [text_uid(p, c, t) for p, c, t in zip(rows["prompt"], rows["chat"], rows["text"])]
    texts = rows.assign(uid=uids)[["uid", "prompt", "chat", "text"]].drop_duplicates("uid")
    scored = oracle_rewards(texts.reset_index(drop=True), oracle, cfg, cfg.max_length, console)
    return pd.Series(uids, index=rows.index).map(scored["reward"]).astype(float)


def build_round_pairs(cfg: PairsConfig, console: Console | None = None) -> dict[str, Any]:
    """Score, pair and prepare; returns what OUT/pairs.json holds (+ ``reused``)."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    samples = load_samples(cfg.samples)
    oracle = resolve(cfg.oracle)
    check_model(oracle, role="oracle", oracle=True)
    check_tokenizer(oracle, role="oracle")
    request = _request(cfg, samples.file, oracle)
    record_path = storage.join(cfg.out, PAIRS_FILE)
    old = reusable(
        record_path, force=cfg.force, differences=lambda old: _differences(old, request), out=cfg.out
    )
    if old is not None and storage.exists(storage.join(cfg.data, "stats.json")):
        return {**old, "reused": True}
    for target in (PAIRS_FILE, "scores.jsonl", "pairs.jsonl"):
        storage.remove(storage.join(cfg.out, target))
    storage.remove(cfg.data)
    storage.makedirs(cfg.out)

    rows = samples.rows
    console.print(f"[bold]{cfg.tag} pairs[/] {len(rows)} samples of {samples.name} scored by {oracle}")
    rows = rows.assign(reward=score_samples(cfg, rows, oracle, console))
    scored = _write_scores(cfg.out, rows)
    result = build_pairs(scored, cfg.pair_rule, cfg.margin, cfg.tag)
    summary = result.summary()
    if not result.pairs:
        raise UserError(
            f"{cfg.tag}: no pairs from {summary['prompts']} prompts of {cfg.samples} (no pair because: "
            f"{summary['skipped']}); sample more per prompt, raise the temperature or lower the margin"
        )
    storage.write_jsonl(storage.join(cfg.out, "pairs.jsonl"), result.pairs)
    record = {
        **request,
        **summary,
        "sample_rewards": describe(rows["reward"].tolist()),
        "data": cfg.data,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    storage.write_json(record_path, record)
    # Prepared last: its stats.json marks the step finished.
    _prepare_pairs(cfg, console)
    console.print(
        f"[bold]{cfg.tag} pairs[/] {summary['pairs']} pairs from {summary['prompts']} prompts "
        f"(none from: {summary['skipped'] or 'no prompt'})"
    )
    return {**record, "reused": False}


def _write_scores(out: str, rows: pd.DataFrame) -> list[ScoredSample]:
    """OUT/scores.jsonl (every sample's reward), and the samples as the pair rule takes them."""
    storage.write_jsonl(
        storage.join(out, "scores.jsonl"),
        (
            {
                "prompt_id": r.prompt_id,
                "sample_idx": int(r.sample_idx),
                "temperature": float(r.temperature),
                "reward": float(r.reward),
                "num_tokens": None if pd.isna(r.num_tokens) else int(r.num_tokens),
                "text": r.text,
            }
            for r in rows.itertuples()
        ),
    )
    return [
        ScoredSample(r.prompt_id, r.prompt, bool(r.chat), int(r.sample_idx), r.text, float(r.reward))
        for r in rows.itertuples()
    ]


def _prepare_pairs(cfg: PairsConfig, console: Console) -> None:
    from ..data.prepare import prepare

    prepare(
        PrepareConfig(
            source="pairs",
            input=storage.join(cfg.out, "pairs.jsonl"),
            out=cfg.data,
            tokenizer=resolve(cfg.tokenizer),
            max_prompt_length=cfg.max_prompt_length,
            max_length=cfg.prepared_max_length,
        ),
        console,
    )
