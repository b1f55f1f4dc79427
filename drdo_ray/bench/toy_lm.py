"""A word-level toy language model for `drdo-ray bench quality`: the vocabulary, a random-init
tiny Llama saved as an ordinary Hugging Face folder, training through THE loop
(``drdo_ray.train.loop.run``, called directly: no Ray), batched scoring of pairs, sampling, and
a one-line-per-stage progress log."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from ..config import TrainConfig
from ..models import pair_forward, sequence_forward
from ..run_layout import RunLayout
from ..train.batches import Collator
from ..train.engine import World
from ..train.loop import run
from . import synthetic as syn

EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"
# ------------------------------------------------------------------ model and tokenizer


class Words:
    """Word <-> id for the synthetic language (EOS 0, pad 1, unk 2, then the vocabulary)."""

    def __init__(self) -> None:
        self.words = [EOS, PAD, UNK, *syn.vocabulary()]
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.eos, self.pad = 0, 1

    def encode(self, words: Sequence[str], *, eos: bool = False) -> list[int]:
        return [self.ids.get(w, 2) for w in words] + ([self.eos] if eos else [])

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Words up to the first EOS (special tokens dropped)."""
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i > 2:
                out.append(self.words[i])
        return out


def build_model(out: Path, words: Words, *, seed: int, hidden_size: int, num_layers: int) -> Path:
    """A random-init tiny Llama over the word vocabulary plus a word-level tokenizer, saved as an
    ordinary Hugging Face folder (the loop and the export callback load it by path)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ..models.tiny import save_random_init, tiny_config

    tok = Tokenizer(models.WordLevel(vocab=words.ids, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    config = tiny_config(
        "llama",
        vocab_size=len(words.words),
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=4,
        max_positions=64,
        pad_id=words.pad,
        eos_id=words.eos,
        bos_id=words.eos,
    )
    return save_random_init(config, tokenizer, out, seed=seed)


# ------------------------------------------------------------------ training through the loop


def train(
    cfg: TrainConfig,
    columns: dict[str, np.ndarray],
    *,
    pad_id: int,
    extra: Sequence[str] = (),
    edpo_oracles: int = 0,
) -> Path:
    """One stage through THE loop; returns the exported model folder (run_dir/models/<name>)."""
    from ..train.ray_trainer import export_fn

    rows = len(columns["prompt_ids"])
    collate = Collator(pad_id=pad_id, pairs=cfg.stage != "sft", extra=extra, edpo_oracles=edpo_oracles)
    size = cfg.micro_batch_size

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        # A seeded order per epoch: the same for every method trained with the same seed.
        order = np.random.default_rng([cfg.seed, epoch]).permutation(rows)
        for i in range(0, rows - size + 1, size):
            yield collate({k: v[order[i : i + size]] for k, v in columns.items()})

    layout = RunLayout(cfg.run_dir)
    metrics_dir = Path(layout.train(cfg.run_name))
    # The loop's per-step console lines would bury the benchmark's one line per stage.
    with contextlib.redirect_stdout(io.StringIO()):
        final = run(
            cfg,
            batches=batches,
            num_rows=rows,
            world=World(),
            metrics_dir=metrics_dir,
            export=export_fn(cfg, World()),
        )
    if final["status"] != "finished":
        raise RuntimeError(f"{cfg.name}: training {final['status']} ({final.get('bad_steps')} bad steps)")
    return Path(layout.model(cfg.run_name))


def objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of lists (ragged token-id columns, as the collator takes them)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


@torch.no_grad()
def pair_scores(
    model: torch.nn.Module,
    prompts: list[list[int]],
    chosen: list[list[int]],
    rejected: list[list[int]],
    *,
    pad_id: int,
    batch: int = 128,
) -> dict[str, np.ndarray]:
    """Reward-head rewards (if any) and summed / token-mean log-probs of every pair."""
    collate = Collator(pad_id=pad_id, pairs=True)
    keys = ("rw", "rl", "zw_sum", "zl_sum", "zw_mean", "zl_mean")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(0, len(prompts), batch):
        b = collate(
            {
                "prompt_ids": objects(prompts[i : i + batch]),
                "chosen_ids": objects(chosen[i : i + batch]),
                "rejected_ids": objects(rejected[i : i + batch]),
            }
        )
        b.pop("num_rows")
        p = pair_forward(model, b, reduction="sum")
        if p.chosen_rewards is not None:
            out["rw"] += p.chosen_rewards.tolist()
            out["rl"] += p.rejected_rewards.tolist()
        out["zw_sum"] += p.chosen_logps.tolist()
        out["zl_sum"] += p.rejected_logps.tolist()
        out["zw_mean"] += (p.chosen_logps / p.chosen_tokens.clamp(min=1)).tolist()
        out["zl_mean"] += (p.rejected_logps / p.rejected_tokens.clamp(min=1)).tolist()
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


@torch.no_grad()
def response_rewards(
    model: torch.nn.Module,
    prompts: list[list[int]],
    responses: list[list[int]],
    *,
    pad_id: int,
    batch: int = 256,
) -> np.ndarray:
    """Reward-head rewards of (prompt, response) rows: one forward pass over each sequence."""
    collate = Collator(pad_id=pad_id, pairs=False)
    out: list[float] = []
    for i in range(0, len(prompts), batch):
        b = collate(
            {"prompt_ids": objects(prompts[i : i + batch]), "chosen_ids": objects(responses[i : i + batch])}
        )
        b.pop("num_rows")
        out += sequence_forward(model, b).rewards.tolist()
    return np.asarray(out, dtype=np.float64)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: list[list[int]],
    words: Words,
    *,
    temperature: float,
    n: int,
    max_new_tokens: int,
    top_p: float,
    seed: int,
    batch: int = 256,
) -> list[list[list[str]]]:
    """``n`` sampled responses (word lists) per prompt. Prompts all have the same length, so no
    padding; the torch seed is set per call, so every model sees the same random stream."""
    model.eval()
    torch.manual_seed(seed)
    out: list[list[list[str]]] = []
    for i in range(0, len(prompts), batch):
        ids = torch.tensor(prompts[i : i + batch], dtype=torch.long)
        gen = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            eos_token_id=words.eos,
            pad_token_id=words.pad,
        )
        texts = [words.decode(row[ids.shape[1] :].tolist()) for row in gen]
        out += [texts[j * n : (j + 1) * n] for j in range(ids.shape[0])]
    return out


# ------------------------------------------------------------------ progress


class Progress:
    """One console line per stage: its time, the elapsed total and an ETA from the mean so far."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.done = console, total, 0
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, label: str, kind: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.times[kind] = self.times.get(kind, 0.0) + dt
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        self.console.print(
            f"[{self.done:3d}/{self.total}] {label:32s} {dt:6.1f}s   elapsed {elapsed / 60:4.1f}m"
            f" ETA {eta / 60:4.1f}m"
        )
