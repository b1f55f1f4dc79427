"""How prompts and responses become token ids. One place, shared by data preparation,
training collation, scoring and generation, so the prompt/response boundary is the same
everywhere."""

from __future__ import annotations

from typing import Any


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool) -> list[int]:
    """Token ids of the prompt. Chat sources (Ultrafeedback, AlpacaEval) go through the
    tokenizer's chat template as one user turn plus the assistant generation prompt; text
    sources (TL;DR, CNN/DM) are encoded as written, with the BOS token when the tokenizer
    adds one."""
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        # transformers 5 returns a BatchEncoding-like mapping; older versions a list.
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of a response, terminated by EOS so the model learns to stop."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids
