"""How prompts and responses become token ids. One place, shared by data preparation,
training collation, scoring and generation, so the prompt/response boundary is the same
everywhere."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from .schema import NORMALIZED_SCHEMA, RAW_PREVIEW_CHARS, TOKEN_FIELDS, known_reason
from .tldr_split import normalized_edit_distance


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


class Featurize:
    """Ray Data stage (a callable class, so the tokenizer loads once per actor): token ids,
    lengths, the length filter, and the TL;DR summary edit distance.

    Without a tokenizer, rows keep their text only, no length filter applies, and the edit
    distance is computed over whitespace words (recorded in stats.json)."""

    def __init__(
        self,
        tokenizer_path: str | None,
        *,
        max_prompt_length: int = 512,
        max_length: int = 1024,
        pair_distance: bool = False,
        limit_responses: bool = True,
    ) -> None:
        self.tokenizer = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            from ..artifacts import local_model

            self.tokenizer = AutoTokenizer.from_pretrained(local_model(tokenizer_path))
        self.max_prompt_length = max_prompt_length
        self.max_length = max_length
        self.pair_distance = pair_distance
        # Evaluation prompt sets: the reference is never fed to the model, so only the prompt
        # must fit; prompt + response is a training constraint.
        self.limit_responses = limit_responses

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row.update(dict.fromkeys(_TOKEN_NAMES))
            if row["reject_reason"] is None:
                self._featurize(row)
        return pa.Table.from_pylist(rows, schema=FEATURIZED_SCHEMA)

    def _featurize(self, row: dict[str, Any]) -> None:
        chosen, rejected = row["chosen"], row["rejected"]
        if self.tokenizer is None:
            if self.pair_distance and chosen is not None and rejected is not None:
                row["distance"] = normalized_edit_distance(chosen.split(), rejected.split())
            return
        tok = self.tokenizer
        prompt_ids = encode_prompt(tok, row["prompt"], chat=bool(row["chat"]))
        chosen_ids = encode_response(tok, chosen) if chosen is not None else None
        rejected_ids = encode_response(tok, rejected) if rejected is not None else None
        row.update(
            prompt_ids=prompt_ids,
            chosen_ids=chosen_ids,
            rejected_ids=rejected_ids,
            prompt_len=len(prompt_ids),
            chosen_len=len(chosen_ids) if chosen_ids is not None else None,
            rejected_len=len(rejected_ids) if rejected_ids is not None else None,
        )
        if self.pair_distance and chosen_ids is not None and rejected_ids is not None:
            # Summary tokens only: the shared EOS would shrink every distance a little.
            row["distance"] = normalized_edit_distance(chosen_ids[:-1], rejected_ids[:-1])
        longest = max(len(chosen_ids or ()), len(rejected_ids or ()))
        if len(prompt_ids) > self.max_prompt_length:
            _reject(row, "prompt_too_long", f"{len(prompt_ids)} > {self.max_prompt_length} tokens")
        elif self.limit_responses and len(prompt_ids) + longest > self.max_length:
            _reject(row, "too_long", f"{len(prompt_ids) + longest} > {self.max_length} tokens")


def _reject(row: dict[str, Any], reason: str, detail: str) -> None:
    row["reject_reason"] = known_reason(reason)
    row["reject_detail"] = detail
    row["raw"] = json.dumps({k: row[k] for k in ("id", "prompt", "chosen", "rejected")}, ensure_ascii=False)[
        :RAW_PREVIEW_CHARS
    ]


_TOKEN_NAMES = [name for name, _ in TOKEN_FIELDS]
FEATURIZED_SCHEMA = pa.schema(list(NORMALIZED_SCHEMA) + [pa.field(n, t) for n, t in TOKEN_FIELDS])
