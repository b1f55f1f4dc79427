"""A tiny random-init causal LM plus its locally trained tokenizer, written as an ordinary
Hugging Face folder. Tests and the demo load it through the same ``from_pretrained`` path
that loads a hub model, so no code path is special-cased for offline runs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, OPTConfig, PretrainedConfig

from drdo_ray.models.tokenizer import default_corpus, train_tokenizer


def tiny_config(
    arch: str,
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    max_positions: int,
    pad_id: int,
    eos_id: int,
    bos_id: int,
) -> PretrainedConfig:
    """The transformers config of a tiny random-init causal LM (``llama`` or ``opt``)."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
    )
    if arch == "llama":
        return LlamaConfig(intermediate_size=4 * hidden_size, num_key_value_heads=num_heads, **common)
    if arch == "opt":
        # Dropout off: OPT's default 0.1 would make tiny training runs nondeterministic.
        return OPTConfig(
            ffn_dim=4 * hidden_size,
            word_embed_proj_dim=hidden_size,
            dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
    raise ValueError(f"unknown arch {arch!r}; expected 'llama' or 'opt'")


def build_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 2048,
    arch: Literal["llama", "opt"] = "llama",
    texts: Iterable[str] | None = None,
) -> Path:
    """Train a tokenizer on ``texts`` (default: :func:`default_corpus`), build a random-init
    causal LM sized to that tokenizer, and ``save_pretrained`` both (safetensors) into
    ``out_dir``. The same arguments give identical files: the tokenizer is deterministic and
    weights are drawn after ``torch.manual_seed(seed)`` (inside a forked RNG, so the caller's
    global RNG state is left untouched). ``vocab_size`` bounds the tokenizer's vocabulary;
    the model's embedding has exactly ``len(tokenizer)`` rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = list(texts) if texts is not None else default_corpus()
    if not corpus:
        raise ValueError("no texts to train the tokenizer on (and no shipped sample data found)")
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size, model_max_length=max_positions)
    config = tiny_config(
        arch,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        max_positions=max_positions,
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
        bos_id=tokenizer.bos_token_id,
    )
    return save_random_init(config, tokenizer, out, seed=seed)


def save_random_init(config: Any, tokenizer: Any, out: Path, *, seed: int) -> Path:
    """A float32 random-init causal LM of ``config`` (seeded without touching the global RNG) with
    the tokenizer's special ids as its generation defaults, saved with the tokenizer to ``out``:
    an ordinary Hugging Face folder, loaded back as a hub model would be."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
