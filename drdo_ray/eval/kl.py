"""`drdo-ray eval kl`: token-averaged KL divergence of a policy from its SFT (reference) model
on the policy's own samples (paper App. J, Table 7).

For each sampled response y of prompt x, at every response position t:

    KL_t = sum_v π(v | x, y<t) · (log π(v | x, y<t) - log π_ref(v | x, y<t))

the exact KL between the two next-token distributions (full vocabulary, temperature 1, no
top-p: the models, not the sampler), averaged over the response's tokens; ``kl`` is the mean
of that over samples ("expected KL-divergence (averaged over tokens) over the completions").
Exact per-position KL is never negative and is exactly 0 for identical models, unlike the
sampled estimator ``log π(y_t) - log π_ref(y_t)``, which is reported beside it
(``kl_sampled``). A response cut at ``max_new_tokens`` (finish_reason "length") is scored
without the EOS it never produced.

    OUT/kl.json            kl, kl_std, kl_token_weighted, kl_sampled, n_samples, n_tokens,
                           by_temperature, label, step, at_temperature (the filter), provenance
    OUT/kl_samples.jsonl   per sample: key, tokens, kl, kl_sampled
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from .. import storage
from ..artifacts import check_model, device_dtype, fingerprint, local_model, pad_id, resolve
from ..config import KLConfig
from ..errors import UserError
from ..generation.sampling_params import temperature_id
from . import stats
from .inference import check_tokenizer, map_with_actors
from .results import write_result
from .samples import SampleSet, load_samples

_CHUNK_POSITIONS = 512  # log-softmax over (positions, vocab) in slices: bounded float32 memory


def sample_kl(
    policy: Any,
    reference: Any,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_length: int | None = None,
) -> list[dict[str, float]]:
    """Per sequence: ``tokens``, ``kl`` (token mean of the exact per-position KL), ``kl_sum``,
    ``kl_sampled`` (token mean of log π - log π_ref at the sampled tokens). One forward pass
    per model; log-softmax in float32 at response positions only."""
    import torch

    from ..models import collate_sequences, position_ids_from_mask

    device = next(policy.parameters()).device
    batch = collate_sequences(prompt_ids, response_ids, pad_id=pad_id, max_length=max_length)
    batch = {k: v.to(device) for k, v in batch.items()}
    positions = position_ids_from_mask(batch["attention_mask"])
    with torch.inference_mode():
        logits_p = policy(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions
        ).logits
        logits_q = reference(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions
        ).logits
        if logits_p.shape[-1] != logits_q.shape[-1]:
            raise ValueError(
                f"policy and reference vocabularies differ ({logits_p.shape[-1]} vs {logits_q.shape[-1]}): "
                "KL needs the same tokenizer"
            )
        mask = batch["response_mask"][:, 1:]
        labels = batch["input_ids"][:, 1:][mask]
        rows = mask.nonzero()[:, 0]
        p_all, q_all = logits_p[:, :-1][mask], logits_q[:, :-1][mask]
        kl = torch.empty(labels.shape[0], dtype=torch.float64, device=device)
        sampled = torch.empty_like(kl)
        for start in range(0, labels.shape[0], _CHUNK_POSITIONS):
            end = start + _CHUNK_POSITIONS
            lp = torch.log_softmax(p_all[start:end].float(), dim=-1)
            lq = torch.log_softmax(q_all[start:end].float(), dim=-1)
            kl[start:end] = (lp.exp() * (lp - lq)).sum(-1).clamp(min=0).double()
            target = labels[start:end].unsqueeze(-1)
            sampled[start:end] = (lp.gather(-1, target) - lq.gather(-1, target)).squeeze(-1).double()
        n = len(prompt_ids)
        tokens = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, rows, torch.ones_like(kl))
        kl_sum = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, rows, kl)
        sampled_sum = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, rows, sampled)
    out = []
    for t, k, s in zip(tokens.tolist(), kl_sum.tolist(), sampled_sum.tolist()):
        out.append(
            {
                "tokens": int(t),
                "kl_sum": k,
                "kl": k / t if t else float("nan"),
                "kl_sampled": s / t if t else float("nan"),
            }
        )
    return out


def response_ids_for_kl(tokenizer: Any, text: str, finish_reason: str | None) -> list[int]:
    """The sampled response's ids: EOS-terminated unless generation was cut by length."""
    from ..data.tokenize import encode_response

    ids = encode_response(tokenizer, text)
    if (
        finish_reason == "length"
        and ids
        and tokenizer.eos_token_id is not None
        and ids[-1] == tokenizer.eos_token_id
    ):
        ids = ids[:-1]
    return ids


class KLScorer:
    """Ray Data callable class: policy and reference load once per actor, frozen."""

    def __init__(self, policy: str, reference: str, *, dtype: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, torch_dtype = device_dtype(dtype)
        policy, reference = local_model(policy), local_model(reference)
        self.models = []
        for path in (policy, reference):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
            self.models.append(model.eval().requires_grad_(False))
        self.tokenizer = AutoTokenizer.from_pretrained(policy)
        self.pad_id = pad_id(policy)
        self.max_length = getattr(self.models[0].config, "max_position_embeddings", None)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from ..data.tokenize import encode_prompt

        prompts = [
            encode_prompt(self.tokenizer, p, chat=bool(c)) for p, c in zip(batch["prompt"], batch["chat"])
        ]
        responses = [
            response_ids_for_kl(self.tokenizer, t, f) for t, f in zip(batch["text"], batch["finish_reason"])
        ]
        keep = [i for i, r in enumerate(responses) if r]  # nothing sampled: no tokens to average over
        values = (
            sample_kl(
                *self.models,
                [prompts[i] for i in keep],
                [responses[i] for i in keep],
                pad_id=self.pad_id,
                max_length=self.max_length,
            )
            if keep
            else []
        )
        rows = [
            {"tokens": 0, "kl_sum": 0.0, "kl": float("nan"), "kl_sampled": float("nan")} for _ in responses
        ]
        for i, value in zip(keep, values):
            rows[i] = value
        frame = pd.DataFrame(rows)
        frame.insert(0, "row", batch["row"].to_numpy())
        return frame


@dataclass
class KLPlan:
    """What a KL run scores: the policy's samples (at one temperature, if asked), the two models."""

    samples: SampleSet
    rows: pd.DataFrame  # the samples scored
    policy: str
    reference: str
    label: str


def plan_kl(cfg: KLConfig) -> KLPlan:
    """Load the samples (at ``at_temperature``), check both models and the policy's tokenizer."""
    samples = load_samples(cfg.samples)
    rows = samples.rows
    if cfg.at_temperature is not None:
        rows = rows[rows["temperature"].map(temperature_id) == temperature_id(cfg.at_temperature)]
        if rows.empty:
            raise UserError(f"{cfg.samples} holds no samples at temperature {cfg.at_temperature:g}")
    policy, reference = resolve(cfg.policy), resolve(cfg.reference)
    check_model(policy, role="policy")
    check_model(reference, role="reference")
    check_tokenizer(policy, role="policy")
    label = cfg.label or PurePosixPath(policy.rstrip("/")).name
    return KLPlan(samples, rows.reset_index(drop=True), policy, reference, label)


def score_kl(cfg: KLConfig, plan: KLPlan, console: Console) -> pd.DataFrame:
    """Per sample (the plan's row order): the key, ``tokens`` and its KL terms, from both models
    on a Ray Data actor pool."""
    frame = plan.rows[["prompt", "chat", "text", "finish_reason"]].copy()
    frame["finish_reason"] = frame["finish_reason"].astype(object).where(frame["finish_reason"].notna(), None)
    frame.insert(0, "row", np.arange(len(frame)))
    scored = map_with_actors(
        frame,
        KLScorer,
        args=(plan.policy, plan.reference),
        kwargs={"dtype": cfg.dtype},
        batch_size=cfg.batch_size,
        num_actors=cfg.num_actors,
        num_gpus=cfg.num_gpus_per_actor,
        console=console,
    )
    per = plan.rows[["prompt_id", "temperature", "sample_idx"]].copy()
    return per.join(scored.set_index("row").sort_index()[["tokens", "kl", "kl_sum", "kl_sampled"]])


def _kl_summary(group: pd.DataFrame) -> dict[str, Any]:
    kl = stats.mean_std(group["kl"])
    return {
        "kl": kl["mean"],
        "kl_std": kl["std"],
        "kl_token_weighted": float(group["kl_sum"].sum() / group["tokens"].sum()),
        "kl_sampled": stats.mean_std(group["kl_sampled"])["mean"],
        "n_samples": len(group),
        "n_tokens": int(group["tokens"].sum()),
    }


def _optional(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def report_kl(cfg: KLConfig, plan: KLPlan, per: pd.DataFrame, started: float) -> dict[str, Any]:
    """The statistics (overall and by temperature) and OUT/ (kl.json, kl_samples.jsonl)."""
    scored_rows = per[per["tokens"] > 0]
    if scored_rows.empty:
        raise UserError(f"{cfg.samples}: no sample has a response token to score")
    by_temperature = scored_rows.groupby(scored_rows["temperature"].map(stats.temperature_key), sort=True)
    result: dict[str, Any] = {
        "kind": "kl",
        "label": plan.label,
        "step": cfg.step,
        **_kl_summary(scored_rows),
        "skipped_empty": int((per["tokens"] == 0).sum()),
        "by_temperature": {key: _kl_summary(group) for key, group in by_temperature},
        "policy": {"path": plan.policy, "fingerprint": fingerprint(plan.policy)},
        "reference": {"path": plan.reference, "fingerprint": fingerprint(plan.reference)},
        "samples": plan.samples.describe(),
        "at_temperature": cfg.at_temperature,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    storage.makedirs(cfg.out)
    outputs = {"kl": storage.join(cfg.out, "kl.json"), "samples": storage.join(cfg.out, "kl_samples.jsonl")}
    sample_rows = [
        {
            "prompt_id": r.prompt_id,
            "temperature": _optional(r.temperature),
            "sample_idx": int(r.sample_idx),
            "tokens": int(r.tokens),
            "kl": _optional(r.kl),
            "kl_sampled": _optional(r.kl_sampled),
        }
        for r in per.itertuples()
    ]
    storage.write_jsonl(outputs["samples"], sample_rows)
    result["outputs"] = outputs
    write_result(outputs["kl"], result)
    return result


def run_kl(cfg: KLConfig, console: Console | None = None) -> dict[str, Any]:
    """Plan (samples, models), score KL on the actor pool, report (statistics, OUT/); returns
    the kl.json content."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    plan = plan_kl(cfg)
    console.print(
        f"[bold]eval kl[/] {plan.label}: KL(policy || reference) over {len(plan.rows)} samples of "
        f"{plan.samples.name}"
    )
    return report_kl(cfg, plan, score_kl(cfg, plan, console), started)
