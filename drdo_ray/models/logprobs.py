"""Batch collation and response log-probabilities in one forward pass.

Coordinates: ``input_ids``/``attention_mask``/``response_mask`` are (N, T) in input
positions. ``token_logps`` are (N, T-1) in *shifted* positions: ``token_logps[:, t]`` is
``log p(input_ids[:, t+1] | input_ids[:, :t+1])``, 0 wherever ``input_ids[:, t+1]`` is not a
response token. Only response tokens count (the prompt is masked), EOS included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from drdo_ray.models.reward_head import position_ids_from_mask

Reduction = Literal["mean", "sum"]


def collate_sequences(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    padding_side: str = "right",
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Tensor]:
    """Concatenate prompt + response per row and pad to a common length.

    Returns ``input_ids`` (long), ``attention_mask`` (long, 1 on real tokens) and
    ``response_mask`` (bool, 1 exactly on response tokens), all (N, T).

    ``max_length`` truncates the *response* from the right (a cut response loses its EOS);
    the prompt is never cut: a prompt that leaves no room for one response token raises,
    because over-long rows are meant to be filtered at tokenization time, not silently
    changed here. ``pad_to_multiple_of`` rounds T up (tensor-core friendly shapes).
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    rows: list[tuple[list[int], int]] = []  # (ids, prompt length)
    for prompt, response in zip(prompt_ids, response_ids, strict=True):
        prompt, response = list(prompt), list(response)
        if not prompt:
            # The first token of a sequence has no prediction; an empty prompt would silently
            # drop the first response token from the log-prob.
            raise ValueError("empty prompt: a response needs at least one token to condition on")
        if max_length is not None:
            room = max_length - len(prompt)
            if room < 1:
                raise ValueError(
                    f"prompt of {len(prompt)} tokens leaves no room for a response within "
                    f"max_length={max_length}; filter such rows at tokenization"
                )
            response = response[:room]
        rows.append((prompt + response, len(prompt)))

    width = max((len(ids) for ids, _ in rows), default=0)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.bool)
    for i, (ids, n_prompt) in enumerate(rows):
        start = 0 if padding_side == "right" else width - len(ids)
        end = start + len(ids)
        input_ids[i, start:end] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, start:end] = 1
        response_mask[i, start + n_prompt : end] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def collate_pairs(
    prompt_ids: Sequence[Sequence[int]],
    chosen_ids: Sequence[Sequence[int]],
    rejected_ids: Sequence[Sequence[int]],
    **kwargs: Any,
) -> dict[str, Tensor]:
    """Chosen rows 0..B-1, then rejected rows B..2B-1, in one (2B, T) batch so that a single
    forward pass covers both. Keyword arguments as :func:`collate_sequences`."""
    if not (len(prompt_ids) == len(chosen_ids) == len(rejected_ids)):
        raise ValueError("prompt, chosen and rejected lists differ in length")
    prompts = list(prompt_ids)
    return collate_sequences(prompts + prompts, list(chosen_ids) + list(rejected_ids), **kwargs)


def sequence_logps(
    logits: Tensor, input_ids: Tensor, response_mask: Tensor, *, reduction: Reduction = "mean"
) -> tuple[Tensor, Tensor]:
    """Per-sequence response log-prob (N,) float32 and per-token log-probs (N, T-1) float32
    (0 off the response). ``mean`` divides by the response length (0 for an empty response).

    Only the logits at response positions are cast to float32 (log-probs of a bf16 softmax
    are too coarse for DPO-style margins), computed as ``logit[label] - logsumexp(logits)``;
    prompt and pad positions are never touched, so no (N, T, V) float32 copy is made and
    whatever the model emits at pad positions cannot leak in.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    labels = input_ids[:, 1:]
    mask = response_mask[:, 1:].bool()
    picked = logits[:, :-1][mask].float()  # (M, V) response positions only
    target = labels[mask].unsqueeze(-1)
    token_values = picked.gather(-1, target).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    token_logps = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    token_logps = token_logps.masked_scatter(mask, token_values)
    seq = token_logps.sum(-1)
    if reduction == "mean":
        seq = seq / mask.sum(-1).clamp(min=1)
    return seq, token_logps


@dataclass
class SequenceOutput:
    logps: Tensor  # (N,) float32, reduced as asked
    token_logps: Tensor  # (N, T-1) float32, 0 off the response
    rewards: Tensor | None  # (N,) float32; None for a model without a reward head
    nll: Tensor  # (N,) token-mean NLL of the response (SFT loss), whatever the reduction
    num_tokens: Tensor  # (N,) long, response tokens scored
    hidden: Tensor | None = None  # (N, T, H) final hidden states (the trunk's output), if kept


@dataclass
class PairOutput:
    chosen_logps: Tensor  # (B,)
    rejected_logps: Tensor  # (B,)
    chosen_token_logps: Tensor  # (B, T-1)
    rejected_token_logps: Tensor  # (B, T-1)
    chosen_rewards: Tensor | None  # (B,) float32
    rejected_rewards: Tensor | None  # (B,) float32
    chosen_nll: Tensor  # (B,) token-mean NLL of chosen (the Oracle's LM regularizer)
    chosen_tokens: Tensor  # (B,) long
    rejected_tokens: Tensor  # (B,) long
    hidden: Tensor | None = None  # (2B, T, H) final hidden states, chosen rows first, if kept


def output_head(model: Any) -> nn.Linear:
    """The LM head behind DDP / DeepSpeed (``.module``) and PolicyWithRewardHead (``.lm``).
    Chunked log-probs apply it themselves, so a model that transforms its logits further
    (soft-capping, scaling) is refused rather than silently scored differently."""
    inner = getattr(model, "module", model)
    lm = getattr(inner, "lm", inner)
    config = lm.config.get_text_config()
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        raise ValueError(
            f"{type(lm).__name__} transforms its logits after lm_head; use logps_chunk_size=None"
        )
    head = lm.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(lm).__name__} has no nn.Linear output head; use logps_chunk_size=None")
    return head


def _chunk_logps(hidden: Tensor, target: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def chunked_token_logps(
    hidden: Tensor, head: nn.Linear, input_ids: Tensor, response_mask: Tensor, chunk_size: int
) -> Tensor:
    """Per-token response log-probs (N, T-1) float32 from final hidden states (N, T, H), as
    :func:`sequence_logps` gives from logits, without ever holding the (N, T, V) logits: the
    head projects ``chunk_size`` response positions at a time, and under autograd each chunk
    is recomputed in the backward pass (activation checkpointing), so at most one
    (chunk_size, V) float32 block is alive at once."""
    mask = response_mask[:, 1:].bool()
    states = hidden[:, :-1][mask]  # (M, H) response positions only
    target = input_ids[:, 1:][mask]
    pieces = []
    for start in range(0, states.shape[0], chunk_size):
        args = (
            states[start : start + chunk_size],
            target[start : start + chunk_size],
            head.weight,
            head.bias,
        )
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(*args))
    values = torch.cat(pieces) if pieces else states.new_zeros(0, dtype=torch.float32)
    token_logps = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    return token_logps.masked_scatter(mask, values)


def _run(
    model: Callable[..., Any],
    batch: dict[str, Tensor],
    reduction: Reduction,
    chunk_size: int | None = None,
    keep_hidden: bool = False,
) -> SequenceOutput:
    attention_mask = batch["attention_mask"]
    position_ids = batch.get("position_ids")
    if position_ids is None:
        # Passed explicitly so a plain HF causal LM (e.g. a reference model) is also right
        # under left padding, not just PolicyWithRewardHead.
        position_ids = position_ids_from_mask(attention_mask)
    inputs = dict(input_ids=batch["input_ids"], attention_mask=attention_mask, position_ids=position_ids)
    if chunk_size:
        # The model still runs through its wrapper (DDP hooks, DeepSpeed), keeping one logit row.
        out = model(**inputs, logits_to_keep=1, output_hidden_states=True)
        token_logps = chunked_token_logps(
            out.hidden_states[-1], output_head(model), batch["input_ids"], batch["response_mask"], chunk_size
        )
    else:
        out = model(**inputs, **({"output_hidden_states": True} if keep_hidden else {}))
        _, token_logps = sequence_logps(
            out.logits, batch["input_ids"], batch["response_mask"], reduction="sum"
        )
    num_tokens = batch["response_mask"][:, 1:].sum(-1)
    total = token_logps.sum(-1)
    mean = total / num_tokens.clamp(min=1)
    return SequenceOutput(
        logps=mean if reduction == "mean" else total,
        token_logps=token_logps,
        rewards=getattr(out, "rewards", None),
        nll=-mean,
        num_tokens=num_tokens,
        hidden=out.hidden_states[-1] if keep_hidden else None,
    )


def sequence_forward(
    model: Callable[..., Any],
    batch: dict[str, Tensor],
    *,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    keep_hidden: bool = False,
) -> SequenceOutput:
    """One forward pass over single sequences (SFT, scoring). ``model``: a
    PolicyWithRewardHead, a DeepSpeed engine wrapping one, or a plain causal LM (then
    ``rewards`` is None). ``chunk_size``: project the vocabulary that many response tokens at
    a time (:func:`chunked_token_logps`) instead of materializing all logits. ``keep_hidden``:
    also return the final hidden states (``hidden_states[-1]``: what the LM head and the
    reward head read), still in the autograd graph, for gradient diagnostics."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return _run(model, batch, reduction, chunk_size, keep_hidden)


def pair_forward(
    model: Callable[..., Any],
    batch: dict[str, Tensor],
    *,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    keep_hidden: bool = False,
) -> PairOutput:
    """One forward pass over a :func:`collate_pairs` batch, split back into chosen/rejected.
    ``keep_hidden`` as in :func:`sequence_forward` (the (2B, T, H) states are not split)."""
    n = batch["input_ids"].shape[0]
    if n % 2:
        raise ValueError(f"a pair batch has an even number of rows (chosen then rejected), got {n}")
    out = sequence_forward(model, batch, reduction=reduction, chunk_size=chunk_size, keep_hidden=keep_hidden)
    b = n // 2
    rewards = out.rewards
    return PairOutput(
        chosen_logps=out.logps[:b],
        rejected_logps=out.logps[b:],
        chosen_token_logps=out.token_logps[:b],
        rejected_token_logps=out.token_logps[b:],
        chosen_rewards=None if rewards is None else rewards[:b],
        rejected_rewards=None if rewards is None else rewards[b:],
        chosen_nll=out.nll[:b],
        chosen_tokens=out.num_tokens[:b],
        rejected_tokens=out.num_tokens[b:],
        hidden=out.hidden,
    )
