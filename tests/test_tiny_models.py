"""The offline tokenizer + tiny model builder: load-back, determinism, chat template, UTF-8."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from drdo_ray.data.tokenize import encode_prompt, encode_response
from drdo_ray.models import build_tiny_model, default_corpus, train_tokenizer
from drdo_ray.models.tokenizer import EOS_TOKEN, PAD_TOKEN, ROLE_TOKENS

CORPUS = [
    "SUBREDDIT: r/relationships\n\nTITLE: My friend keeps cancelling plans\n\nPOST: We agreed to meet.\n\nTL;DR:",
    " Friend cancels plans a lot, not sure what to do.",
    "How do I bake bread at home? Mix flour, water, salt and yeast, then let it rise.",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps again.",
    "Explain photosynthesis in simple terms: plants turn light, water and CO2 into sugar.",
] * 4


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; patch the constant as well in case
    # another module imported it before this file set the variable.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, texts=CORPUS, arch=arch) for arch in ("llama", "opt")}


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_load_back_and_generate(tiny_dirs: dict[str, Path], arch: str) -> None:
    path = tiny_dirs[arch]
    assert (path / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id

    tok.padding_side = "left"
    enc = tok(["How do I bake", "The quick brown fox jumps over"], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[0] == 2
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_deterministic_builds(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", texts=CORPUS, seed=0)
    b = build_tiny_model(tmp_path / "b", texts=CORPUS, seed=0)
    c = build_tiny_model(tmp_path / "c", texts=CORPUS, seed=1)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    sa, sb, sc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", texts=CORPUS, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_chat_template(tiny_dirs: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I bake bread?"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert (
        text == "<|system|>\nBe brief.<|endoftext|><|user|>\nHow do I bake bread?<|endoftext|><|assistant|>\n"
    )
    plain = tok.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert not plain.endswith("<|assistant|>\n")

    # Token level: the prompt ends with the assistant header, whose role marker is one token.
    ids = encode_prompt(tok, "How do I bake bread?", chat=True)
    header = tok.convert_tokens_to_ids("<|assistant|>")
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert ids[-1 - len(newline)] == header
    assert ids[-len(newline) :] == newline

    # A full [user, assistant] conversation is exactly prompt ids + response ids.
    convo = tok.apply_chat_template(
        [{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "Mix flour."}],
        tokenize=False,
    )
    assert tok(convo, add_special_tokens=False)["input_ids"] == ids + encode_response(tok, "Mix flour.")


def test_special_tokens_are_single_ids(tiny_dirs: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    for token in (EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS):
        assert tok(token, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(token)]
    # Encoding adds nothing: prompts are encoded as written.
    assert tok("abc")["input_ids"] == tok("abc", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    "text",
    ["Ωmega → naïve café, 日本語のテキスト 🚀🙂", "tabs\tand\nnewlines  double  spaces ", "Zqxj ÿ\u200b€"],
)
def test_unseen_utf8_round_trips(tiny_dirs: dict[str, Path], text: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_train_tokenizer_vocab_bound() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300)
    assert 256 + 5 <= len(tok) <= 300
    with pytest.raises(Exception, match="Unsupported chat role"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_default_corpus_reads_json_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"prompt": "p1", "chosen": [{"role": "user", "content": "c1"}], "score": 3.0})
        + "\n\n"
        + json.dumps({"prompt": "p2", "info": {"post": "ünï"}})
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "i1", "output": "o1"}]), encoding="utf-8")
    (tmp_path / "ignored.txt").write_text("nope")
    assert default_corpus(tmp_path) == ["i1", "o1", "p1", "user", "c1", "p2", "ünï"]


def test_default_corpus_shipped_samples() -> None:
    samples = Path(__file__).resolve().parents[1] / "drdo_ray" / "data" / "samples"
    if not [*samples.glob("*.jsonl"), *samples.glob("*.json")]:
        pytest.skip("no shipped sample datasets yet")
    corpus = default_corpus()
    assert corpus and all(isinstance(t, str) for t in corpus)
    assert corpus == default_corpus()
