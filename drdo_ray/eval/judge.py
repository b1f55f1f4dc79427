"""`drdo-ray eval judge`: LLM-judge win rate of sample set A over B (docs/evaluation.md;
paper Table 1, App. G) through the official ``openai`` client, against OpenAI or any
OpenAI-compatible server (``--base-url``: vLLM, this project's Serve endpoint).

- Orders: ``both`` asks every pair twice, A shown first then B shown first, and combines the two
  verdicts by the sign of their sum (A+A win, A+B tie, A+tie win, tie+tie tie), which cancels a
  judge's position bias; ``random`` asks once, the order drawn per pair from a seeded RNG.
- Parsing: ``Preferred: A|B`` (judge_prompts.parse_verdict). An unparseable answer is asked
  once more; if it is still unparseable, or a request fails for good, the pair is *dropped*:
  out of the denominator, counted in ``dropped`` (paper §6: "discarded from the denominator").
- Identical responses are a tie without asking (as for the Oracle: equal rewards tie).
- Transport: the client's own retries are off; 429, 408/409, 5xx, timeouts and connection
  errors are retried here (up to ``max_retries``) with exponential backoff and jitter, honouring
  ``Retry-After``, so every retry is counted. Other 4xx fail the request at once.
- Money: answers are cached in SQLite (judge_cache.py); cache hits cost nothing. Before each
  request its worst-case cost (estimated prompt tokens + ``max_tokens``) is reserved against
  ``max_cost``; the first request that would not fit stops all further spending, and the pairs
  it leaves are ``not_judged`` (a rerun with a higher cap resumes from the cache).
- The API key is read from the environment, handed to the client, and never logged or written:
  error texts are redacted before they reach the console or a file.

    OUT/judge.json       wins, ties, losses, dropped, win_rate (ties half), ci95, requests,
                         cache_hits, tokens, cost_usd, by_temperature, ...
    OUT/verdicts.jsonl   per pair: both verdicts, the judge's raw text, scores, the outcome
    OUT/ood.json|.md|.png    win rate by prompt length (when prompt lengths are known)
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from rich.console import Console

from .. import storage
from ..config import JudgeConfig
from ..errors import UserError
from . import stats
from .judge_cache import CachedAnswer, JudgeCache, cache_key
from .judge_prompts import build_prompt, parse_verdict
from .results import write_result
from .samples import KEY, REFERENCE, Pairing, SampleSet, load_sides, pair, select_pairs

# USD per 1k tokens (input, output): OpenAI list prices for the judges the paper names and
# their usual substitutes. Matched by the longest prefix of the model name
# ("gpt-4o-2024-08-06" -> gpt-4o). Override or extend with JudgeConfig.prices / price_per_1k;
# unknown models (a local vLLM) cost 0.
PRICES_PER_1K: dict[str, tuple[float, float]] = {
    "gpt-4o": (0.0025, 0.010),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4-turbo": (0.010, 0.030),
    "gpt-4": (0.030, 0.060),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-3.5-turbo": (0.0005, 0.0015),
}
RETRYABLE_STATUS = {408, 409, 429}
_MIN_TOKENS_PER_CHAR = 1 / 3  # cost-cap estimate: English runs ~4 chars a token; be pessimistic


def price_for(
    model: str,
    overrides: dict[str, tuple[float, float]] | None = None,
    explicit: tuple[float, float] | None = None,
) -> tuple[tuple[float, float], bool]:
    """((input, output) USD per 1k tokens, whether the price is known) for ``model``."""
    if explicit is not None:
        return (float(explicit[0]), float(explicit[1])), True
    table = {**PRICES_PER_1K, **(overrides or {})}
    matches = [prefix for prefix in table if model == prefix or model.startswith(prefix)]
    if not matches:
        return (0.0, 0.0), False
    best = max(matches, key=len)
    return (float(table[best][0]), float(table[best][1])), True


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    return text


def public_url(url: str | None) -> str | None:
    """The base URL as it may be written down: no user:password@, no query (keys hide there)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class CostCapReached(Exception):
    """A request would have spent past ``max_cost``."""


@dataclass
class Ledger:
    """Money and counters, shared by the judge threads."""

    price: tuple[float, float]
    max_cost: float | None
    spent: float = 0.0
    reserved: float = 0.0
    stopped: bool = False
    tokens_per_char: float = _MIN_TOKENS_PER_CHAR
    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    cost_cached: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.price[0] / 1000 + completion_tokens * self.price[1] / 1000

    def estimate(self, prompt: str, max_tokens: int) -> float:
        return self.cost(math.ceil(len(prompt) * self.tokens_per_char) + 16, max_tokens)

    def reserve(self, amount: float) -> bool:
        with self.lock:
            if self.stopped or (
                self.max_cost is not None and self.spent + self.reserved + amount > self.max_cost + 1e-12
            ):
                self.stopped = True
                return False
            self.reserved += amount
            self.counts["requests"] += 1
            return True

    def settle(self, reserved: float, prompt: str, prompt_tokens: int, completion_tokens: int) -> float:
        cost = self.cost(prompt_tokens, completion_tokens)
        with self.lock:
            self.reserved -= reserved
            self.spent += cost
            self.counts["prompt_tokens"] += prompt_tokens
            self.counts["completion_tokens"] += completion_tokens
            if prompt:  # learn the tokenizer's density, so later estimates stay upper bounds
                self.tokens_per_char = max(self.tokens_per_char, 1.1 * prompt_tokens / len(prompt))
        return cost

    def release(self, reserved: float) -> None:
        with self.lock:
            self.reserved -= reserved

    def hit(self, answer: CachedAnswer) -> None:
        with self.lock:
            self.counts["cache_hits"] += 1
            self.cost_cached += answer.cost_usd

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def error(self, label: str) -> None:
        with self.lock:
            self.errors[label] += 1


@dataclass
class Answer:
    text: str | None
    cached: bool = False
    error: str | None = None


def _retry_label(err: Exception) -> tuple[str, bool]:
    """(error label, retryable) for an openai exception."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return "timeout", True
    if isinstance(err, openai.APIConnectionError):
        return "connection", True
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        return f"http_{status}", status in RETRYABLE_STATUS or status >= 500
    return type(err).__name__, False


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class JudgeClient:
    """One judge model behind one endpoint: cache first, then the API with retries."""

    def __init__(
        self,
        cfg: JudgeConfig,
        cache: JudgeCache,
        ledger: Ledger,
        api_key: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai

        self.cfg = cfg
        self.cache = cache
        self.ledger = ledger
        self.secrets = [api_key]
        self.sleep = sleep
        # max_retries=0: retries happen in ask(), where they are counted and backed off with jitter.
        self.client = openai.OpenAI(
            api_key=api_key, base_url=cfg.base_url, timeout=cfg.timeout_s, max_retries=0
        )
        self._jitter = random.Random()
        self._key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()

    def _key_lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._key_locks[key]

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with equal jitter: a delay in [d/2, d], d = base * 2^attempt,
        capped; at least the server's Retry-After."""
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2**attempt)
        delay = delay / 2 + self._jitter.uniform(0, delay / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max_s))
        return delay

    def ask(self, prompt: str, attempt: int) -> Answer:
        """The judge's answer to ``prompt``. ``attempt`` 1 is the retry after an unparseable
        answer (a separate cache entry). Raises CostCapReached when the request cannot be paid."""
        messages = [{"role": "user", "content": prompt}]
        key = cache_key(
            self.cfg.model,
            messages,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            attempt=attempt,
        )
        # Two pairs with the same prompt (identical samples) wait for each other: one pays.
        with self._key_lock(key):
            cached = self.cache.get(key)
            if cached is not None:
                self.ledger.hit(cached)
                return Answer(cached.text, cached=True)
            return self._request(key, messages, prompt)

    def _request(self, key: str, messages: list[dict[str, str]], prompt: str) -> Answer:
        import openai

        cfg = self.cfg
        for n in range(cfg.max_retries + 1):
            reserved = self.ledger.estimate(prompt, cfg.max_tokens)
            if not self.ledger.reserve(reserved):
                raise CostCapReached
            try:
                response = self.client.chat.completions.create(
                    model=cfg.model,
                    messages=messages,
                    temperature=cfg.temperature,
                    max_tokens=cfg.max_tokens,
                )
            except openai.OpenAIError as err:
                # Not billed: rate limits and server errors are not charged; a timed-out
                # request's cost is unknown and not counted.
                self.ledger.release(reserved)
                label, retryable = _retry_label(err)
                self.ledger.error(label)
                if not retryable or n == cfg.max_retries:
                    detail = redact(str(err), self.secrets).splitlines()[0][:300] if str(err) else ""
                    return Answer(None, error=f"{label}: {detail}" if detail else label)
                self.ledger.count("retries")
                self.sleep(self.backoff(n, _retry_after(err)))
                continue
            usage = getattr(response, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            cost = self.ledger.settle(reserved, prompt, prompt_tokens, completion_tokens)
            choices = response.choices or []
            text = (choices[0].message.content if choices and choices[0].message else None) or ""
            self.cache.put(key, cfg.model, CachedAnswer(text, prompt_tokens, completion_tokens, cost))
            return Answer(text)
        raise AssertionError("unreachable")  # the loop returns on its last iteration


# --------------------------------------------------------------------------------- pairs


def order_plan(orders: str, seed: int, key: tuple[Any, ...]) -> list[str]:
    """Which model is shown first, per request: ["a", "b"] for both orders, else one side
    drawn from an RNG seeded by the seed and the pair's key (deterministic, whatever the
    thread scheduling)."""
    if orders == "both":
        return ["a", "b"]
    rng = random.Random(f"{seed}:{key!r}")
    return ["a" if rng.random() < 0.5 else "b"]


def combine(winners: list[str]) -> str:
    """Per-order winners ("a", "b", "tie") -> the pair's outcome for A: sign of the sum."""
    total = sum(1 if w == "a" else -1 if w == "b" else 0 for w in winners)
    return "win" if total > 0 else "loss" if total < 0 else "tie"


def _ask(client: JudgeClient, prompt: str, entry: dict[str, Any]) -> Any:
    """One order's verdict: asked once, and once more if unparseable; the answers, cache hits
    and error go into ``entry``. None: no usable verdict (the pair is dropped). Raises
    CostCapReached when the next request would pass ``max_cost``."""
    for attempt in (0, 1):
        answer = client.ask(prompt, attempt)
        if answer.error is not None:
            entry["error"] = answer.error
            return None
        entry["raw"].append(answer.text)
        entry["cached"].append(answer.cached)
        parsed = parse_verdict(answer.text)
        if parsed.parsed:
            return parsed
        if attempt == 0:
            client.ledger.count("parse_retries")
    return None


def judge_pair(
    client: JudgeClient,
    row: dict[str, Any],
    *,
    task: str,
    orders: str,
    seed: int,
    scores: bool,
    reference_is_candidate: bool,
) -> dict[str, Any]:
    """Judge one pair; returns its verdicts.jsonl record (``outcome``: win, tie, loss, dropped,
    not_judged)."""
    key = tuple(row[k] for k in KEY)
    record: dict[str, Any] = {
        "prompt_id": row["prompt_id"],
        "temperature": row["temperature"],
        "sample_idx": int(row["sample_idx"]),
        "prompt_tokens": row.get("prompt_tokens"),
        "outcome": None,
        "reason": None,
        "orders": [],
    }
    if row["text_a"].strip() == row["text_b"].strip():
        record.update(outcome="tie", reason="identical")
        return record
    winners = []
    for shown_first in order_plan(orders, seed, key):
        first, second = (
            (row["text_a"], row["text_b"]) if shown_first == "a" else (row["text_b"], row["text_a"])
        )
        template, prompt = build_prompt(
            task,
            prompt=row["prompt"],
            first=first,
            second=second,
            reference=row.get("reference"),
            reference_is_candidate=reference_is_candidate,
            scores=scores,
        )
        entry: dict[str, Any] = {"shown_first": shown_first, "template": template, "preferred": None}
        entry |= {"winner": None, "scores": {}, "raw": [], "cached": [], "error": None}
        record["orders"].append(entry)
        try:
            verdict = _ask(client, prompt, entry)
        except CostCapReached:
            record.update(outcome="not_judged", reason="max_cost")
            return record
        if verdict is None:
            record.update(outcome="dropped", reason="error" if entry["error"] else "unparseable")
            return record  # the pair is dropped whatever the other order would say: don't pay for it
        shown = {"A": shown_first, "B": "b" if shown_first == "a" else "a"}
        entry["preferred"] = verdict.preferred
        entry["winner"] = "tie" if verdict.preferred == "tie" else shown[verdict.preferred]
        entry["scores"] = {shown[pos]: value for pos, value in verdict.scores.items()}
        winners.append(entry["winner"])
    record["outcome"] = combine(winners)
    for side in ("a", "b"):
        values = [o["scores"][side] for o in record["orders"] if side in o["scores"]]
        record[f"score_{side}"] = sum(values) / len(values) if values else None
    return record


# ------------------------------------------------------------------------------- driver


def _prompt_lengths(
    prompts: pd.DataFrame, tokenizer_path: str | None
) -> tuple[dict[str, int] | None, str | None]:
    """Prompt token counts per prompt_id (for the OOD bins), with the policy's tokenizer; None
    when no tokenizer is at hand (the judge itself needs none)."""
    if not tokenizer_path:
        return None, None
    try:
        from transformers import AutoTokenizer

        from ..data.tokenize import encode_prompt

        tok = AutoTokenizer.from_pretrained(tokenizer_path)
    except Exception:  # no tokenizer there: OOD bins are optional
        return None, None
    lengths = {
        pid: len(encode_prompt(tok, prompt, chat=bool(chat)))
        for pid, prompt, chat in prompts[["prompt_id", "prompt", "chat"]]
        .drop_duplicates("prompt_id")
        .itertuples(index=False)
    }
    return lengths, tokenizer_path


def _default_tokenizer(meta: dict[str, Any]) -> str | None:
    model = meta.get("model")
    return model if isinstance(model, str) and Path(model).is_dir() else None


def _summaries(records: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    decided = [r for r in records if r["outcome"] in ("win", "tie", "loss")]
    outcomes = [stats.OUTCOME_VALUES[r["outcome"]] for r in decided]
    clusters = [r["prompt_id"] for r in decided]
    summary = stats.summarize(outcomes, clusters, n_boot=cfg.bootstrap, seed=cfg.seed, label="all")
    summary["by_temperature"] = stats.by_group(
        outcomes,
        [stats.temperature_key(r["temperature"]) for r in decided],
        clusters,
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
    )
    for key, group in summary["by_temperature"].items():
        group["dropped"] = sum(
            1 for r in records if r["outcome"] == "dropped" and stats.temperature_key(r["temperature"]) == key
        )
    reasons = Counter(r["reason"] for r in records if r["outcome"] == "dropped")
    summary["dropped"] = sum(reasons.values())
    summary["dropped_by_reason"] = dict(reasons)
    summary["not_judged"] = sum(1 for r in records if r["outcome"] == "not_judged")
    summary["identical"] = sum(1 for r in records if r["reason"] == "identical")
    # Position bias: how often the response shown first wins a decisive single verdict.
    firsts = [
        o["winner"] == o["shown_first"] for r in records for o in r["orders"] if o.get("winner") in ("a", "b")
    ]
    summary["position_bias"] = {
        "first_shown_wins": sum(firsts) / len(firsts) if firsts else None,
        "n": len(firsts),
    }
    with_scores = [r for r in decided if r.get("score_a") is not None and r.get("score_b") is not None]
    summary["scores"] = {
        "a": stats.mean_std([r["score_a"] for r in with_scores]),
        "b": stats.mean_std([r["score_b"] for r in with_scores]),
        "margin": stats.mean_std([r["score_a"] - r["score_b"] for r in with_scores]),
    }
    return summary


def _cache_path(cfg: JudgeConfig) -> str:
    """The SQLite answer cache: ``cache``, else OUT/judge_cache.sqlite (SQLite needs a local
    file: one per remote OUT on this machine)."""
    if cfg.cache:
        return cfg.cache
    if storage.is_local(cfg.out):
        return str(Path(cfg.out.removeprefix("file://")) / "judge_cache.sqlite")
    import hashlib

    digest = hashlib.sha1(cfg.out.encode()).hexdigest()[:16]
    return str(Path.home() / ".cache" / "drdo-ray" / f"judge-{digest}.sqlite")


def _api_key(cfg: JudgeConfig) -> str:
    api_key = os.environ.get(cfg.api_key_env) or ""
    if api_key:
        return api_key
    if cfg.base_url is None:
        raise UserError(f"set {cfg.api_key_env} (the OpenAI API key), or pass --base-url for another server")
    return "EMPTY"  # vLLM and other local servers accept any key


@dataclass
class JudgePlan:
    """What a judge run asks: the pairs (one row each, with its prompt length where a tokenizer
    is at hand), the task, the key, the price and the answer cache."""

    a: SampleSet
    b: SampleSet
    reference_is_candidate: bool
    pairing: Pairing
    rows: list[dict[str, Any]]
    task: str
    api_key: str
    price: tuple[float, float]
    price_known: bool
    cache_path: str
    tokenizer: str | None  # the prompt lengths' (None: no lengths, no OOD bins)


def plan_judge(cfg: JudgeConfig, console: Console) -> JudgePlan:
    """Load and pair the two sides (a seeded subset of ``max_pairs``), choose the task, check the
    key and the price, measure the prompts."""
    a, b, reference_is_candidate = load_sides(cfg.a, cfg.b, a_name=cfg.a_name, b_name=cfg.b_name)
    pairing = pair(a, b)
    pairs = select_pairs(pairing.pairs, max_pairs=cfg.max_pairs, seed=cfg.seed)
    if pairs.empty:
        raise UserError(
            f"nothing to judge: {a.name} and {b.name} share no (prompt_id, temperature, sample_idx)"
        )
    task = cfg.task if cfg.task != "auto" else ("instruct" if bool(pairs["chat"].any()) else "summarize")
    api_key = _api_key(cfg)
    price, price_known = price_for(cfg.model, cfg.prices, cfg.price_per_1k)
    if cfg.max_cost is not None and not price_known:
        console.print(
            f"[yellow]warning:[/] no price known for {cfg.model}: --max-cost cannot bind "
            "(set price_per_1k to enforce it)"
        )
    lengths, tokenizer = _prompt_lengths(pairs, cfg.tokenizer or _default_tokenizer(a.meta))
    rows = pairs.to_dict("records")
    for row in rows:
        row["temperature"] = None if pd.isna(row["temperature"]) else float(row["temperature"])
        row["reference"] = row["reference"] if isinstance(row["reference"], str) else None
        row["prompt_tokens"] = lengths.get(row["prompt_id"]) if lengths else None
    return JudgePlan(
        a,
        b,
        reference_is_candidate,
        pairing,
        rows,
        task,
        api_key,
        price,
        price_known,
        _cache_path(cfg),
        tokenizer,
    )


def judge_rows(
    cfg: JudgeConfig, plan: JudgePlan, ledger: Ledger, console: Console, sleep: Callable[[float], None]
) -> list[dict[str, Any]]:
    """Every pair's verdicts.jsonl record, ``max_concurrency`` pairs at a time, in row order."""
    rows = plan.rows
    records: list[dict[str, Any] | None] = [None] * len(rows)
    with JudgeCache(plan.cache_path) as cache:
        client = JudgeClient(cfg, cache, ledger, plan.api_key, sleep=sleep)
        every = max(1, len(rows) // 10)
        pool = ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="judge")
        options = {"task": plan.task, "orders": cfg.orders, "seed": cfg.seed, "scores": cfg.scores}
        try:
            futures = {
                pool.submit(
                    judge_pair, client, row, **options, reference_is_candidate=plan.reference_is_candidate
                ): i
                for i, row in enumerate(rows)
            }
            for done, future in enumerate(as_completed(futures), 1):
                records[futures[future]] = future.result()
                if done % every == 0 or done == len(rows):
                    console.print(
                        f"  {done}/{len(rows)} pairs, {ledger.counts['requests']} requests, "
                        f"{ledger.counts['cache_hits']} cache hits, ${ledger.spent:.4f}"
                    )
        except BaseException:
            # Ctrl-C or a bug: stop queued pairs now; every answer paid for so far is in the
            # cache, so the rerun resumes without paying twice.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        client.client.close()
    return [r for r in records if r is not None]


def _spending(cfg: JudgeConfig, plan: JudgePlan, ledger: Ledger) -> dict[str, Any]:
    """judge.json's requests, tokens and money."""
    counts = ledger.counts
    return {
        "requests": counts["requests"],
        "retries": counts["retries"],
        "parse_retries": counts["parse_retries"],
        "cache_hits": counts["cache_hits"],
        "errors": dict(ledger.errors),
        "tokens": {
            "prompt": counts["prompt_tokens"],
            "completion": counts["completion_tokens"],
            "total": counts["prompt_tokens"] + counts["completion_tokens"],
        },
        "cost_usd": round(ledger.spent, 6),
        "cost_usd_cached": round(ledger.cost_cached, 6),
        "price_per_1k": {"input": plan.price[0], "output": plan.price[1], "known": plan.price_known},
        "max_cost": cfg.max_cost,
        "stopped_reason": "max_cost" if ledger.stopped else None,
    }


def report_judge(
    cfg: JudgeConfig, plan: JudgePlan, records: list[dict[str, Any]], ledger: Ledger, started: float
) -> dict[str, Any]:
    """The statistics and OUT/ (judge.json, verdicts.jsonl, ood.* where prompt lengths are known)."""
    from .ood import ood_result, write_ood

    a, b = plan.a, plan.b
    storage.write_jsonl(storage.join(cfg.out, "verdicts.jsonl"), records)
    outputs = {
        "judge": storage.join(cfg.out, "judge.json"),
        "verdicts": storage.join(cfg.out, "verdicts.jsonl"),
        "cache": plan.cache_path,
    }
    if plan.tokenizer is not None:
        ood = ood_result(
            records,
            width=cfg.bin_width,
            n_boot=cfg.bootstrap,
            seed=cfg.seed,
            at_temperature=cfg.ood_at_temperature,
            source="judge",
            a=a.name,
            b=b.name,
            tokenizer=plan.tokenizer,
        )
        outputs.update(write_ood(cfg.out, ood))
    judge = {
        "model": cfg.model,
        "base_url": public_url(cfg.base_url),
        "task": plan.task,
        "orders": cfg.orders,
    }
    judge |= {"scores": cfg.scores, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    unpaired_b = 0 if plan.reference_is_candidate else plan.pairing.unpaired_b
    result = {
        "kind": "judge",
        "a": a.describe(),
        "b": b.describe() if not plan.reference_is_candidate else {"name": b.name, "samples": REFERENCE},
        "judge": judge,
        **_summaries(records, cfg),
        "pairs": len(plan.rows),
        "unpaired": {"a": plan.pairing.unpaired_a, "b": unpaired_b},
        **_spending(cfg, plan, ledger),
        "seed": cfg.seed,
        "bootstrap": {"n": cfg.bootstrap, "seed": cfg.seed, "level": stats.DEFAULT_LEVEL, "unit": "prompt"},
        "elapsed_s": round(time.perf_counter() - started, 3),
        "outputs": outputs,
    }
    write_result(outputs["judge"], result)
    return result


def run_judge(
    cfg: JudgeConfig, console: Console | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Plan (pair, task, key, price), judge every pair (or a seeded subset) through the client's
    thread pool, report (statistics, OUT/); returns the judge.json content."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    plan = plan_judge(cfg, console)
    storage.makedirs(cfg.out)
    ledger = Ledger(price=plan.price, max_cost=cfg.max_cost)
    console.print(
        f"[bold]eval judge[/] {plan.a.name} vs {plan.b.name}: {len(plan.rows)} pairs, task {plan.task}, "
        f"orders {cfg.orders}, judge {cfg.model} at {public_url(cfg.base_url) or 'api.openai.com'}, "
        f"{cfg.max_concurrency} concurrent"
        + (f", max ${cfg.max_cost:.2f}" if cfg.max_cost is not None else "")
    )
    records = judge_rows(cfg, plan, ledger, console, sleep)
    return report_judge(cfg, plan, records, ledger, started)
