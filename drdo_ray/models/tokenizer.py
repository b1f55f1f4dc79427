"""A small byte-level BPE tokenizer trained locally, so tests and the demo never need the hub.

Special tokens (ids in this order, before any learned merge):

- ``<|endoftext|>`` (id 0): EOS and BOS. Ends every response and every chat turn, so
  generation stops where ``encode_response`` puts its EOS. It is *not* added automatically
  to encoded text (GPT-2 convention): prompts are encoded as written.
- ``<|pad|>`` (id 1): padding only, distinct from EOS so that a mask rebuilt from
  ``input_ids != pad_id`` never hides a real EOS.
- ``<|system|>``, ``<|user|>``, ``<|assistant|>``: chat role headers (Zephyr-style template:
  ``<|role|>\\n{content}<|endoftext|>``; ``add_generation_prompt`` appends ``<|assistant|>\\n``).
  Because a turn ends with EOS and nothing after it, a rendered [user, assistant]
  conversation is exactly ``encode_prompt(...) + encode_response(...)``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS)

# Roles outside system/user/assistant are rejected at render time rather than silently
# producing a token sequence the model never saw.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unsupported chat role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 512, model_max_length: int = 2048
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer.

    Byte-level pre-tokenization and decoding mean every UTF-8 string round-trips, whatever
    the corpus contained (the 256 byte symbols are always in the vocabulary). ``vocab_size``
    is an upper bound: a small corpus yields fewer merges. Training is deterministic: the
    same texts give a byte-identical ``tokenizer.json``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def _samples_dir() -> Path:
    return Path(str(resources.files("drdo_ray.data") / "samples"))


def _string_leaves(obj: Any) -> Iterator[str]:
    # Dict keys are schema names, not text: only values are walked (in insertion order,
    # which json preserves, so the corpus is deterministic).
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _string_leaves(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _string_leaves(value)


def default_corpus(samples_dir: str | Path | None = None) -> list[str]:
    """Every string leaf of every record in the shipped sample datasets
    (``drdo_ray/data/samples/*.jsonl`` and ``*.json``), files in sorted name order.

    A ``.json`` file holding a list contributes each element as a record; any other JSON
    value is one record. Returns an empty list (with a warning) when no sample files exist.
    """
    folder = Path(samples_dir) if samples_dir is not None else _samples_dir()
    files = sorted([*folder.glob("*.jsonl"), *folder.glob("*.json")], key=lambda p: p.name)
    texts: list[str] = []
    for path in files:
        with path.open(encoding="utf-8") as fh:
            if path.suffix == ".jsonl":
                for line in fh:
                    if line.strip():
                        texts.extend(_string_leaves(json.loads(line)))
            else:
                texts.extend(_string_leaves(json.load(fh)))
    if not texts:
        warnings.warn(f"no sample text found under {folder}", stacklevel=2)
    return texts
