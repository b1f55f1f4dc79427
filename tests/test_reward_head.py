"""PolicyWithRewardHead: save/load, export without the head, last-non-pad reward, head seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from drdo_ray.data.tokenize import encode_prompt, encode_response
from drdo_ray.models import (
    PolicyWithRewardHead,
    build_tiny_model,
    collate_sequences,
    last_token_index,
    sequence_forward,
)

CORPUS = [
    "SUBREDDIT: r/cooking\n\nTITLE: Bread keeps collapsing\n\nPOST: My loaf falls flat.\n\nTL;DR:",
    " Bread collapses, probably over-proofed.",
    "How do I bake bread at home? Mix flour, water, salt and yeast, then let it rise.",
    "The quick brown fox jumps over the lazy dog. Summaries should be short and faithful.",
] * 4

PROMPTS = ["How do I bake bread?", "Tell me about foxes and dogs please", "Hi"]
RESPONSES = ["Mix flour and water.", "Foxes jump.", "The quick brown fox jumps over the lazy dog again."]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_rh")
    return {arch: build_tiny_model(root / arch, texts=CORPUS, arch=arch) for arch in ("llama", "opt")}


@pytest.fixture(scope="module")
def tok(tiny_dirs: dict[str, Path]):
    return AutoTokenizer.from_pretrained(tiny_dirs["llama"])


def _batch(tok, padding_side: str) -> dict[str, torch.Tensor]:
    prompts = [encode_prompt(tok, p, chat=True) for p in PROMPTS]
    responses = [encode_response(tok, r) for r in RESPONSES]
    return collate_sequences(prompts, responses, pad_id=tok.pad_token_id, padding_side=padding_side)


@torch.no_grad()
def test_save_load_round_trip(tiny_dirs: dict[str, Path], tok, tmp_path: Path) -> None:
    model = PolicyWithRewardHead.from_pretrained(tiny_dirs["llama"], head_seed=3)
    batch = _batch(tok, "right")
    before = model(batch["input_ids"], batch["attention_mask"])

    out = model.save_pretrained(tmp_path / "ckpt", tokenizer=tok)
    assert (out / "reward_head.safetensors").is_file()
    assert json.loads((out / "reward_head.json").read_text())["hidden_size"] == model.hidden_size
    assert (out / "tokenizer.json").is_file()

    # The saved head wins over head_seed.
    loaded = PolicyWithRewardHead.from_pretrained(out, head_seed=99)
    after = loaded(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(before.rewards, after.rewards)
    assert torch.equal(before.logits, after.logits)


def test_export_has_no_head(tiny_dirs: dict[str, Path], tok, tmp_path: Path) -> None:
    model = PolicyWithRewardHead.from_pretrained(tiny_dirs["llama"], head_seed=3)
    target = tmp_path / "policy"
    model.save_pretrained(target)  # a checkpoint first: export must clear its head files
    model.export_policy(target, tokenizer=tok)
    assert not list(target.glob("reward_head*"))
    lm = AutoModelForCausalLM.from_pretrained(target)
    batch = _batch(tok, "right")
    with torch.no_grad():
        ref = model(batch["input_ids"], batch["attention_mask"]).logits
        got = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()  # pad positions differ (position ids), never read
    torch.testing.assert_close(got[real], ref[real], rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "opt"])
@torch.no_grad()
def test_reward_at_last_non_pad_token(tiny_dirs: dict[str, Path], tok, arch: str) -> None:
    model = PolicyWithRewardHead.from_pretrained(tiny_dirs[arch])
    right = _batch(tok, "right")
    left = _batch(tok, "left")
    # Rows really differ in length, so both paddings are exercised.
    assert (right["attention_mask"] == 0).any()
    out_r = sequence_forward(model, right, reduction="sum")
    out_l = sequence_forward(model, left, reduction="sum")
    torch.testing.assert_close(out_l.rewards, out_r.rewards, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_l.logps, out_r.logps, rtol=0, atol=1e-5)

    # Each row's reward equals the reward of that sequence run alone, unpadded.
    for i in range(len(PROMPTS)):
        ids = right["input_ids"][i][right["attention_mask"][i].bool()].unsqueeze(0)
        alone = model(ids, torch.ones_like(ids)).rewards
        torch.testing.assert_close(alone[0], out_r.rewards[i], rtol=0, atol=1e-5)

    # And it is the head applied to the final hidden state at that position.
    hidden = model.lm(**{k: right[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    last = last_token_index(right["attention_mask"])
    expected = model.reward_head(hidden.hidden_states[-1][torch.arange(len(PROMPTS)), last]).squeeze(-1)
    torch.testing.assert_close(out_r.rewards, expected, rtol=0, atol=1e-6)


def test_last_token_index() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


@torch.no_grad()
def test_head_seed(tiny_dirs: dict[str, Path], tok) -> None:
    batch = _batch(tok, "right")

    def rewards(seed: int) -> torch.Tensor:
        model = PolicyWithRewardHead.from_pretrained(tiny_dirs["llama"], head_seed=seed)
        return model(batch["input_ids"], batch["attention_mask"]).rewards

    assert torch.equal(rewards(0), rewards(0))
    assert not torch.allclose(rewards(0), rewards(1))


def test_extra_parameters_and_freeze(tiny_dirs: dict[str, Path]) -> None:
    model = PolicyWithRewardHead.from_pretrained(tiny_dirs["llama"])
    hidden = model.lm.config.hidden_size
    n_total = sum(p.numel() for p in model.parameters())
    n_lm = sum(p.numel() for p in model.lm.parameters())
    assert n_total - n_lm == hidden + 1 == model.num_head_parameters()
    assert not model.training  # eval mode, like transformers' from_pretrained
    model.freeze()
    assert not any(p.requires_grad for p in model.parameters())


@torch.no_grad()
def test_head_stays_float32_with_bf16_lm(tiny_dirs: dict[str, Path], tok) -> None:
    model = PolicyWithRewardHead.from_pretrained(tiny_dirs["llama"], torch_dtype=torch.bfloat16)
    assert next(model.lm.parameters()).dtype == torch.bfloat16
    assert model.reward_head.weight.dtype == torch.float32
    batch = _batch(tok, "right")
    assert model(batch["input_ids"], batch["attention_mask"]).rewards.dtype == torch.float32
    # Even if an engine casts the whole module (DeepSpeed bf16 does), rewards stay fp32.
    model.to(torch.bfloat16)
    assert model(batch["input_ids"], batch["attention_mask"]).rewards.dtype == torch.float32
