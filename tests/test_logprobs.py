"""One-pass response log-probs against a slow token-by-token reference; the chat boundary;
pair batching; gradient flow."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from drdo_ray.data.tokenize import encode_prompt, encode_response
from drdo_ray.models import (
    PolicyWithRewardHead,
    build_tiny_model,
    collate_pairs,
    collate_sequences,
    pair_forward,
    sequence_forward,
    sequence_logps,
)

CORPUS = [
    "SUBREDDIT: r/cooking\n\nTITLE: Bread keeps collapsing\n\nPOST: My loaf falls flat.\n\nTL;DR:",
    " Bread collapses, probably over-proofed.",
    "How do I bake bread at home? Mix flour, water, salt and yeast, then let it rise.",
    "The quick brown fox jumps over the lazy dog. Summaries should be short and faithful.",
] * 4

PROMPTS = ["How do I bake bread?", "Tell me about foxes and dogs please, in detail", "Hi"]
CHOSEN = ["Mix flour and water.", "Foxes jump.", "The quick brown fox jumps over the lazy dog again."]
REJECTED = ["No.", "Dogs are lazy and foxes are quick, everyone knows that.", "Hello"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_lp") / "m", texts=CORPUS)


@pytest.fixture(scope="module")
def tok(tiny_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> PolicyWithRewardHead:
    return PolicyWithRewardHead.from_pretrained(tiny_dir)


def _ids(tok, prompts: list[str], responses: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    return [encode_prompt(tok, p, chat=True) for p in prompts], [encode_response(tok, r) for r in responses]


@torch.no_grad()
def _slow_reference(lm, prompt: list[int], response: list[int]) -> tuple[float, float]:
    """(sum, mean) response log-prob from feeding each prefix alone (no padding, no batching)
    and reading the next token's log-softmax."""
    ids = prompt + response
    total = 0.0
    for t in range(len(prompt), len(ids)):
        logits = lm(input_ids=torch.tensor([ids[:t]])).logits[0, -1].double()
        total += torch.log_softmax(logits, -1)[ids[t]].item()
    return total, total / len(response)


@pytest.fixture(scope="module")
def reference_case(model, tok):
    # Mixed lengths, and a text (non-chat) prompt too, so rows pad differently.
    prompts, responses = _ids(tok, PROMPTS, CHOSEN)
    prompts.append(encode_prompt(tok, "TL;DR of a long post about bread", chat=False))
    responses.append(encode_response(tok, " bread"))
    ref = torch.tensor([_slow_reference(model.lm, p, r) for p, r in zip(prompts, responses)])
    return prompts, responses, {"sum": ref[:, 0].float(), "mean": ref[:, 1].float()}


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@torch.no_grad()
def test_matches_token_by_token_reference(
    model, tok, reference_case, padding_side: str, reduction: str
) -> None:
    prompts, responses, expected = reference_case
    batch = collate_sequences(prompts, responses, pad_id=tok.pad_token_id, padding_side=padding_side)
    out = sequence_forward(model, batch, reduction=reduction)
    torch.testing.assert_close(out.logps, expected[reduction], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.nll, -expected["mean"], rtol=0, atol=1e-5)
    assert out.num_tokens.tolist() == [len(r) for r in responses]


def test_sequence_logps_pure() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.bfloat16)
    input_ids = torch.randint(0, 7, (2, 5), generator=g)
    response_mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    seq, tokens = sequence_logps(logits, input_ids, response_mask, reduction="sum")
    full = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    expected = torch.where(response_mask[:, 1:], full, 0.0)
    assert tokens.dtype == torch.float32 and tokens.shape == (2, 4)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(seq, expected.sum(-1))
    mean, _ = sequence_logps(logits, input_ids, response_mask, reduction="mean")
    torch.testing.assert_close(mean, expected.sum(-1) / torch.tensor([2.0, 4.0]))
    # An empty response scores 0, not NaN.
    empty, _ = sequence_logps(logits, input_ids, torch.zeros_like(response_mask), reduction="mean")
    assert torch.equal(empty, torch.zeros(2))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_chat_boundary(tok, padding_side: str) -> None:
    prompts, responses = _ids(tok, ["What is two plus two?", "Hi"], ["Four.", "Hello there, how are you?"])
    batch = collate_sequences(prompts, responses, pad_id=tok.pad_token_id, padding_side=padding_side)
    header = tok.convert_tokens_to_ids("<|assistant|>")
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    for i, response in enumerate(responses):
        ids, mask = batch["input_ids"][i], batch["response_mask"][i]
        assert ids[mask].tolist() == response
        assert response[-1] == tok.eos_token_id
        positions = mask.nonzero().squeeze(-1)
        assert (positions.diff() == 1).all()  # one contiguous span
        start = int(positions[0])
        # Immediately before the response: the unmasked assistant header "<|assistant|>\n".
        assert ids[start - len(newline) - 1 : start].tolist() == [header, *newline]
        assert not mask[:start].any() and not mask[int(positions[-1]) + 1 :].any()
        assert (batch["attention_mask"][i].bool() | ~mask).all()


def test_collate_truncation_and_padding() -> None:
    batch = collate_sequences(
        [[5, 6], [7]], [[1, 2, 3, 4], [8]], pad_id=0, max_length=4, pad_to_multiple_of=8
    )
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0, :4].tolist() == [5, 6, 1, 2]  # response cut from the right
    assert batch["response_mask"][0].tolist() == [False, False, True, True] + [False] * 4
    assert batch["attention_mask"].sum(-1).tolist() == [4, 2]
    assert batch["attention_mask"].dtype == torch.long and batch["response_mask"].dtype == torch.bool
    left = collate_sequences([[5, 6], [7]], [[1], [8]], pad_id=0, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 1], [0, 7, 8]]
    with pytest.raises(ValueError, match="no room"):
        collate_sequences([[1, 2, 3]], [[4]], pad_id=0, max_length=3)
    with pytest.raises(ValueError, match="empty prompt"):
        collate_sequences([[]], [[4]], pad_id=0)


def test_collate_pairs_layout() -> None:
    batch = collate_pairs([[1], [2]], [[3], [4, 4]], [[5, 5, 5], [6]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 3, 0, 0], [2, 4, 4, 0], [1, 5, 5, 5], [2, 6, 0, 0]]


@pytest.mark.parametrize("padding_side", ["right", "left"])
@torch.no_grad()
def test_pair_forward_equals_separate_calls(model, tok, padding_side: str) -> None:
    prompts, chosen = _ids(tok, PROMPTS, CHOSEN)
    _, rejected = _ids(tok, PROMPTS, REJECTED)
    kw = {"pad_id": tok.pad_token_id, "padding_side": padding_side}
    pair = pair_forward(model, collate_pairs(prompts, chosen, rejected, **kw), reduction="mean")
    for i in range(len(PROMPTS)):
        for side, response in (("chosen", chosen[i]), ("rejected", rejected[i])):
            single_batch = collate_sequences([prompts[i]], [response], **kw)
            single = sequence_forward(model, single_batch, reduction="mean")
            torch.testing.assert_close(getattr(pair, f"{side}_logps")[i], single.logps[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(
                getattr(pair, f"{side}_rewards")[i], single.rewards[0], rtol=0, atol=1e-5
            )
            assert int(getattr(pair, f"{side}_tokens")[i]) == len(response)
            tokens = getattr(pair, f"{side}_token_logps")[i]
            nonzero_pair = tokens[tokens != 0]
            nonzero_single = single.token_logps[0][single.token_logps[0] != 0]
            torch.testing.assert_close(nonzero_pair, nonzero_single, rtol=0, atol=1e-5)
            if side == "chosen":
                torch.testing.assert_close(pair.chosen_nll[i], single.nll[0], rtol=0, atol=1e-5)


def test_gradients_reach_lm_and_head(tiny_dir: Path, tok) -> None:
    model = PolicyWithRewardHead.from_pretrained(tiny_dir).train()
    prompts, chosen = _ids(tok, PROMPTS, CHOSEN)
    _, rejected = _ids(tok, PROMPTS, REJECTED)
    batch = collate_pairs(prompts, chosen, rejected, pad_id=tok.pad_token_id, pad_to_multiple_of=8)
    out = pair_forward(model, batch)
    # Rewards enter alone, not only as a difference: a difference is blind to the head's bias.
    loss = (out.chosen_logps - out.rejected_logps).mean() + out.chosen_rewards.mean() + out.chosen_nll.mean()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@torch.no_grad()
def test_plain_lm_has_no_rewards(tiny_dir: Path, model, tok) -> None:
    # A reference model is a plain causal LM: same log-probs, rewards None, left padding OK.
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompts, chosen = _ids(tok, PROMPTS, CHOSEN)
    batch = collate_sequences(prompts, chosen, pad_id=tok.pad_token_id, padding_side="left")
    plain = sequence_forward(lm, batch, reduction="sum")
    policy = sequence_forward(model, batch, reduction="sum")
    assert plain.rewards is None
    torch.testing.assert_close(plain.logps, policy.logps, rtol=0, atol=1e-6)


def _tiny_lm(arch: str):
    from transformers import LlamaConfig, OPTConfig

    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            tie_word_embeddings=False,
        )
    else:  # OPT-350m-style: hidden 32 projected to 16 before the (tied) LM head
        config = OPTConfig(
            vocab_size=97,
            hidden_size=32,
            ffn_dim=64,
            word_embed_proj_dim=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            dropout=0.0,
            pad_token_id=0,
        )
    return AutoModelForCausalLM.from_config(config).train()


@pytest.mark.parametrize("arch", ["llama", "opt"])
@pytest.mark.parametrize("with_head", [False, True])
def test_chunked_logps_equal_full_logits_values_and_gradients(arch: str, with_head: bool) -> None:
    """Chunked vocabulary projection (never holding (N, T, V) logits) gives the same log-probs,
    rewards and parameter gradients as the full-logits path, for a chunk that splits rows."""
    lm = _tiny_lm(arch)
    model = PolicyWithRewardHead(lm).train() if with_head else lm
    batch = collate_pairs(
        [[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], [[15, 16], [17, 18, 19, 20, 21]], pad_id=0
    )
    results = []
    for chunk in (None, 3):
        model.zero_grad()
        out = pair_forward(model, batch, reduction="sum", chunk_size=chunk)
        loss = out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()
        if with_head:
            loss = loss + (out.chosen_rewards - out.rejected_rewards).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (full, g_full), (chunked, g_chunked) = results
    torch.testing.assert_close(chunked.chosen_token_logps, full.chosen_token_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.rejected_logps, full.rejected_logps, atol=1e-5, rtol=1e-5)
    if with_head:
        torch.testing.assert_close(chunked.chosen_rewards, full.chosen_rewards)
    assert g_full.keys() == g_chunked.keys() and len(g_full) > 0
    for name in g_full:
        torch.testing.assert_close(g_chunked[name], g_full[name], atol=1e-5, rtol=1e-4, msg=name)


def test_chunked_logps_refuse_logit_softcapping() -> None:
    lm = _tiny_lm("llama")
    lm.config.final_logit_softcapping = 30.0  # the chunked path would skip the cap: refuse
    batch = collate_pairs([[5, 6]], [[7]], [[8]], pad_id=0)
    with pytest.raises(ValueError, match="transforms its logits"):
        pair_forward(lm, batch, chunk_size=2)
