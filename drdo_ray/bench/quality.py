"""`drdo-ray bench quality`: does the implementation align? A controlled task whose true reward
r* is a known program (synthetic.py), measured exactly.

Per seed: a word-level tiny model is SFT'd on noisy demonstrations; response candidates are
sampled from it and each preference prompt gets one pair, labelled by Bradley-Terry on r*, with
a controlled fraction of non-deterministic pairs (|Δr*| ≈ 0) and of flipped labels. Per
(seed, fraction): the Oracle (Eq. 4) and e-DPO's 3 plain Bradley-Terry Oracles are trained on
those labels and score the pairs; DRDO, DPO, IPO and e-DPO then train from the SFT model with the
same batches, steps and seed. Every model is sampled at each temperature on held-out prompts and
every sample is scored with the TRUE reward.

Every training stage goes through THE loop (``drdo_ray.train.loop.run``) directly, no Ray, and
exports through the same callback Ray Train uses."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .. import storage
from ..config import BenchQualityConfig, TrainConfig
from ..eval.stats import fmt_rate, outcomes_from_rewards, summarize, temperature_key
from ..models import PolicyWithRewardHead, pair_forward
from ..train.batches import Collator
from ..train.engine import World
from ..train.loop import reduction_of, run
from . import synthetic as syn

EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"
BASELINES = ("dpo", "ipo", "edpo")
ENSEMBLE = 3


def frac_key(f: float) -> str:
    return f"{f:g}"


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
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    from ..models.tiny import _config

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
    config = _config(
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=words.eos, eos_token_id=words.eos, pad_token_id=words.pad
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# ------------------------------------------------------------------ training through the loop


def train(
    cfg: TrainConfig,
    columns: dict[str, np.ndarray],
    *,
    pad_id: int,
    extra: Sequence[str] = (),
    ensemble: int = 0,
) -> Path:
    """One stage through THE loop; returns the exported model folder (run_dir/models/<name>)."""
    from ..train.ray_trainer import _export_fn, model_dir

    rows = len(columns["prompt_ids"])
    collate = Collator(pad_id=pad_id, pairs=cfg.stage != "sft", extra=extra, ensemble=ensemble)
    size = cfg.micro_batch_size

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        # A seeded order per epoch: the same for every method trained with the same seed.
        order = np.random.default_rng([cfg.seed, epoch]).permutation(rows)
        for i in range(0, rows - size + 1, size):
            yield collate({k: v[order[i : i + size]] for k, v in columns.items()})

    metrics_dir = Path(cfg.run_dir) / "train" / (cfg.name or cfg.stage)
    # The loop's per-step console lines would bury the benchmark's one line per stage.
    with contextlib.redirect_stdout(io.StringIO()):
        final = run(
            cfg,
            batches=batches,
            num_rows=rows,
            world=World(),
            metrics_dir=metrics_dir,
            export=_export_fn(cfg, World()),
        )
    if final["status"] != "finished":
        raise RuntimeError(f"{cfg.name}: training {final['status']} ({final.get('bad_steps')} bad steps)")
    return Path(model_dir(cfg))


def _objects(values: Sequence[Any]) -> np.ndarray:
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
                "prompt_ids": _objects(prompts[i : i + batch]),
                "chosen_ids": _objects(chosen[i : i + batch]),
                "rejected_ids": _objects(rejected[i : i + batch]),
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


# ------------------------------------------------------------------ the benchmark


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _common(cfg: BenchQualityConfig, run_dir: Path, seed: int, steps: int) -> dict[str, Any]:
    return dict(
        data="-",
        run_dir=str(run_dir),
        micro_batch_size=cfg.batch_size,
        num_workers=1,
        max_steps=steps,
        checkpoint_every=0,
        warmup_steps=min(cfg.warmup_steps, steps - 1),
        seed=seed,
        log_every=10,
        shuffle=True,
    )


def _mean_reward(prompts: list[list[str]], samples: list[list[list[str]]]) -> float:
    return float(np.mean([syn.true_reward(p, y) for p, ys in zip(prompts, samples) for y in ys]))


def bench_quality(cfg: BenchQualityConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    torch.set_num_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # dozens of "Loading weights" bars otherwise
    started = time.perf_counter()
    words = Words()
    s = cfg.scale
    sizes = {
        "sft_rows": _scaled(cfg.sft_rows, s),
        "pairs": _scaled(cfg.pairs, s),
        "heldout_pairs": _scaled(cfg.heldout_pairs, s),
        "eval_prompts": _scaled(cfg.eval_prompts, s),
        "sft_steps": _scaled(cfg.sft_steps, s),
        "oracle_steps": _scaled(cfg.oracle_steps, s),
        "align_steps": _scaled(cfg.align_steps, s),
    }
    methods = list(dict.fromkeys(cfg.methods))
    oracles_needed = ["oracle"] + ([f"oracle-bt{k}" for k in range(ENSEMBLE)] if "edpo" in methods else [])
    total = cfg.seeds * (3 + len(cfg.fractions) * (len(oracles_needed) + 2 * len(methods)))
    progress = Progress(console, total)
    work = Path(tempfile.mkdtemp(prefix="drdo-bench-quality-"))
    console.print(
        f"bench quality: {cfg.seeds} seed(s) x fractions {cfg.fractions}, methods {methods}, "
        f"scale {s:g}; work dir {work}"
    )

    temps = list(cfg.temperatures)
    # rewards[method][fraction][seed] -> array (prompt, temperature, sample) of true rewards
    rewards: dict[str, dict[str, dict[int, np.ndarray]]] = {
        m: {frac_key(f): {} for f in cfg.fractions} for m in [*methods, "sft", "init"]
    }
    oracle_acc: dict[str, dict[str, list[float]]] = {
        frac_key(f): {o: [] for o in oracles_needed} for f in cfg.fractions
    }
    data_stats: dict[str, list[dict[str, float]]] = {frac_key(f): [] for f in cfg.fractions}
    train_metrics: dict[str, dict[str, list[dict[str, float]]]] = {frac_key(f): {} for f in cfg.fractions}

    for seed in range(cfg.seeds):
        rng = np.random.default_rng([seed, 1234])
        seed_dir = work / f"seed{seed}"
        init = build_model(
            seed_dir / "init", words, seed=seed, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers
        )
        eval_prompts = syn.make_prompts(sizes["eval_prompts"], rng)
        eval_ids = [words.encode(p) for p in eval_prompts]

        def evaluate(
            model_dir: Path,
            label: str,
            method: str,
            frac: str | None,
            seed: int = seed,
            eval_prompts: list[list[str]] = eval_prompts,
            eval_ids: list[list[int]] = eval_ids,
        ) -> None:
            from transformers import AutoModelForCausalLM

            with progress.stage(f"seed {seed} {label}: sample + r*", "sample"):
                model = AutoModelForCausalLM.from_pretrained(model_dir)
                grid = np.zeros((len(eval_prompts), len(temps), cfg.samples_per_prompt))
                for t, temp in enumerate(temps):
                    ys = sample(
                        model,
                        eval_ids,
                        words,
                        temperature=temp,
                        n=cfg.samples_per_prompt,
                        max_new_tokens=cfg.max_new_tokens,
                        top_p=cfg.top_p,
                        seed=seed * 1000 + t,
                    )
                    for p, (prompt, samples) in enumerate(zip(eval_prompts, ys)):
                        grid[p, t] = [syn.true_reward(prompt, y) for y in samples]
            for f in [frac] if frac else [frac_key(x) for x in cfg.fractions]:
                rewards[method][f][seed] = grid

        # 1. SFT on noisy demonstrations.
        sft_prompts = syn.make_prompts(sizes["sft_rows"], rng)
        demos = [syn.demonstration(p, rng) for p in sft_prompts]
        with progress.stage(f"seed {seed} sft ({sizes['sft_steps']} steps)", "train"):
            sft_cfg = TrainConfig(
                stage="sft",
                name="sft",
                model=str(init),
                lr=cfg.sft_lr,
                **_common(cfg, seed_dir, seed, sizes["sft_steps"]),
            )
            sft = train(
                sft_cfg,
                {
                    "prompt_ids": _objects([words.encode(p) for p in sft_prompts]),
                    "chosen_ids": _objects([words.encode(d, eos=True) for d in demos]),
                },
                pad_id=words.pad,
            )
        evaluate(init, "init", "init", None)
        evaluate(sft, "sft", "sft", None)

        # 2. Candidate responses from the SFT model (shared by every fraction), held-out pairs.
        from transformers import AutoModelForCausalLM

        pref_prompts = syn.make_prompts(sizes["pairs"], rng)
        held_prompts = syn.make_prompts(sizes["heldout_pairs"], rng)
        sft_model = AutoModelForCausalLM.from_pretrained(sft)
        cands = sample(
            sft_model,
            [words.encode(p) for p in pref_prompts],
            words,
            temperature=1.0,
            n=cfg.candidates,
            max_new_tokens=cfg.max_new_tokens,
            top_p=1.0,
            seed=seed * 1000 + 999,
        )
        cand_r = [[syn.true_reward(p, y) for y in ys] for p, ys in zip(pref_prompts, cands)]
        held = sample(
            sft_model,
            [words.encode(p) for p in held_prompts],
            words,
            temperature=1.0,
            n=2,
            max_new_tokens=cfg.max_new_tokens,
            top_p=1.0,
            seed=seed * 1000 + 998,
        )
        held_delta = np.array(
            [syn.true_reward(p, a) - syn.true_reward(p, b) for p, (a, b) in zip(held_prompts, held)]
        )
        keep = np.abs(held_delta) > cfg.tie_eps  # accuracy only where the true reward has a direction
        held_cols = (
            [words.encode(p) for p, k in zip(held_prompts, keep) if k],
            [words.encode(y[0], eos=True) for y, k in zip(held, keep) if k],
            [words.encode(y[1], eos=True) for y, k in zip(held, keep) if k],
        )
        held_sign = np.sign(held_delta[keep])

        for fraction in cfg.fractions:
            fk = frac_key(fraction)
            # 3. Labelled pairs: BT on r*, a controlled share non-deterministic, a share flipped.
            label_rng = np.random.default_rng([seed, round(fraction * 1000), 77])
            labelled = syn.label_pairs(
                cand_r,
                nondeterministic=fraction,
                flip=cfg.flip,
                rng=label_rng,
                tie_eps=cfg.tie_eps,
                bt_scale=cfg.bt_scale,
                responses=cands,
            )

            # the constructed partner (-1) is the permutation of the pair's other response
            chosen_w = [
                cands[q.prompt][q.chosen] if q.chosen >= 0 else syn.permuted(cands[q.prompt][q.rejected])
                for q in labelled
            ]
            rejected_w = [
                cands[q.prompt][q.rejected] if q.rejected >= 0 else syn.permuted(cands[q.prompt][q.chosen])
                for q in labelled
            ]
            deltas = np.array([q.delta for q in labelled])
            det = np.array([not q.nondeterministic for q in labelled])
            data_stats[fk].append(
                {
                    "seed": seed,
                    "pairs": len(labelled),
                    "nondeterministic": float(np.mean([q.nondeterministic for q in labelled])),
                    "abs_delta_le_eps": float(np.mean(np.abs(deltas) <= cfg.tie_eps)),
                    "flipped": float(np.mean([q.flipped for q in labelled])),
                    "labels_agree_with_r*_deterministic": float(np.mean(deltas[det] > 0))
                    if det.any()
                    else math.nan,
                    "mean_abs_delta_nondeterministic": float(np.mean(np.abs(deltas[~det])))
                    if (~det).any()
                    else math.nan,
                    "mean_abs_delta_deterministic": float(np.mean(np.abs(deltas[det])))
                    if det.any()
                    else math.nan,
                }
            )
            cols: dict[str, Any] = {
                "prompt_ids": _objects([words.encode(pref_prompts[q.prompt]) for q in labelled]),
                "chosen_ids": _objects([words.encode(y, eos=True) for y in chosen_w]),
                "rejected_ids": _objects([words.encode(y, eos=True) for y in rejected_w]),
            }
            frac_dir = seed_dir / f"frac{fk}"
            # 4. The Oracle (Eq. 4) and e-DPO's plain Bradley-Terry ensemble, from the SFT model.
            for name in oracles_needed:
                k = 0 if name == "oracle" else int(name[-1])
                with progress.stage(f"seed {seed} f={fk} {name}", "train"):
                    o_cfg = TrainConfig(
                        stage="oracle",
                        name=name,
                        model=str(sft),
                        lr=cfg.oracle_lr,
                        ensemble=1 if name == "oracle" else ENSEMBLE,
                        head_seed=k,
                        **_common(cfg, frac_dir, seed, sizes["oracle_steps"]),
                    )
                    o_dir = train(o_cfg, cols, pad_id=words.pad)
                    oracle = PolicyWithRewardHead.from_pretrained(o_dir).freeze()
                    sc = pair_scores(
                        oracle,
                        [list(x) for x in cols["prompt_ids"]],
                        list(cols["chosen_ids"]),
                        list(cols["rejected_ids"]),
                        pad_id=words.pad,
                    )
                    suffix = "" if name == "oracle" else f"_{k}"
                    cols[f"oracle_chosen{suffix}"], cols[f"oracle_rejected{suffix}"] = sc["rw"], sc["rl"]
                    hs = pair_scores(oracle, *held_cols, pad_id=words.pad)
                    oracle_acc[fk][name].append(float(np.mean(np.sign(hs["rw"] - hs["rl"]) == held_sign)))
            ref = pair_scores(
                sft_model,
                [list(x) for x in cols["prompt_ids"]],
                list(cols["chosen_ids"]),
                list(cols["rejected_ids"]),
                pad_id=words.pad,
            )
            # 5. Alignment: same batches (same seed -> same order), same steps, from the SFT model.
            for method in methods:
                with progress.stage(f"seed {seed} f={fk} align {method}", "train"):
                    a_cfg = TrainConfig(
                        stage="align",
                        loss=method,
                        name=f"align-{method}",
                        model=str(sft),
                        lr=cfg.lr_of(method),
                        reduction=cfg.reduction.get(method),
                        alpha=cfg.alpha,
                        gamma=cfg.gamma,
                        beta=cfg.beta,
                        **_common(cfg, frac_dir, seed, sizes["align_steps"]),
                    )
                    red = reduction_of(a_cfg)
                    cols["ref_chosen_logps"], cols["ref_rejected_logps"] = ref[f"zw_{red}"], ref[f"zl_{red}"]
                    from ..losses import LOSS_INPUTS

                    extra = LOSS_INPUTS[method]
                    a_dir = train(
                        a_cfg,
                        cols,
                        pad_id=words.pad,
                        extra=extra,
                        ensemble=ENSEMBLE if method == "edpo" else 0,
                    )
                    last = json.loads((frac_dir / "train" / f"align-{method}" / "status.json").read_text())
                    train_metrics[fk].setdefault(method, []).append(
                        {k: v for k, v in last.items() if isinstance(v, int | float)}
                    )
                evaluate(a_dir, f"f={fk} {method}", method, fk)

    report = _report(
        cfg,
        methods,
        temps,
        rewards,
        oracle_acc,
        data_stats,
        train_metrics,
        sizes,
        progress,
        time.perf_counter() - started,
    )
    storage.makedirs(cfg.out)
    report["outputs"] = {
        "report": storage.join(cfg.out, "bench_quality.json"),
        "plot": storage.join(cfg.out, "bench_quality.png"),
    }
    storage.write_json(report["outputs"]["report"], report)
    _plot(report, report["outputs"]["plot"])
    _print_table(report, console)
    return report


def _report(
    cfg: BenchQualityConfig,
    methods: list[str],
    temps: list[float],
    rewards: dict[str, dict[str, dict[int, np.ndarray]]],
    oracle_acc: dict[str, dict[str, list[float]]],
    data_stats: dict[str, list[dict[str, float]]],
    train_metrics: dict[str, Any],
    sizes: dict[str, int],
    progress: Progress,
    wall: float,
) -> dict[str, Any]:
    fracs = [frac_key(f) for f in cfg.fractions]
    seeds = range(cfg.seeds)
    mean_reward = {
        m: {f: float(np.mean([rewards[m][f][s] for s in seeds])) for f in fracs} for m in [*methods, "sft"]
    }
    by_temp = {
        m: {
            f: {
                temperature_key(t): float(np.mean([rewards[m][f][s][:, i] for s in seeds]))
                for i, t in enumerate(temps)
            }
            for f in fracs
        }
        for m in [*methods, "sft", "init"]
    }
    per_seed = {
        m: {f: [float(rewards[m][f][s].mean()) for s in seeds] for f in fracs} for m in [*methods, "sft"]
    }
    win: dict[str, dict[str, Any]] = {}
    for base in (b for b in BASELINES if b in methods):
        win[base] = {}
        for f in fracs:
            # Paired by (seed, prompt, temperature, sample index); the bootstrap resamples (seed, prompt).
            a = np.concatenate([rewards["drdo"][f][s].ravel() for s in seeds])
            b = np.concatenate([rewards[base][f][s].ravel() for s in seeds])
            clusters = np.concatenate(
                [
                    [
                        f"{s}:{p}"
                        for p in range(rewards["drdo"][f][s].shape[0])
                        for _ in range(rewards["drdo"][f][s][0].size)
                    ]
                    for s in seeds
                ]
            )
            win[base][f] = summarize(
                outcomes_from_rewards(a, b),
                clusters,
                n_boot=cfg.bootstrap,
                seed=0,
                label=f"drdo-vs-{base}-{f}",
            )
    accuracy = {f: float(np.mean(oracle_acc[f]["oracle"])) for f in fracs}
    return {
        "mean_true_reward": mean_reward,
        "drdo_win_rate": win,
        "oracle_accuracy": accuracy,
        "oracle_accuracy_detail": oracle_acc,
        "mean_true_reward_per_seed": per_seed,
        "mean_true_reward_by_temperature": by_temp,
        "reference_true_reward": {
            "random_init": float(np.mean([rewards["init"][fracs[0]][s] for s in seeds])),
            "sft": mean_reward["sft"][fracs[0]],
            "optimum": float(syn.TARGET_LENGTH),
        },
        "data": data_stats,
        "final_train_metrics": train_metrics,
        "settings": {**cfg.model_dump(mode="json"), "effective_sizes": sizes},
        "timings": {"wall_s": wall, **{f"{k}_s": v for k, v in progress.times.items()}},
        "device": f"cpu ({cfg.threads} thread(s))",
        "command": " ".join(sys.argv),
    }


def _plot(report: dict[str, Any], path: str) -> None:
    from ..eval.plots import COLORS, _save, plt

    fracs = list(report["oracle_accuracy"])
    xs = [float(f) for f in fracs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (method, values) in enumerate(report["mean_true_reward"].items()):
        style = "--" if method == "sft" else "-"
        ax1.plot(xs, [values[f] for f in fracs], style, marker="o", color=COLORS[i % 10], label=method)
    ax1.set(
        xlabel="non-deterministic fraction", ylabel="mean true reward r*", title="Mean true reward (4 temps)"
    )
    ax1.legend()
    for i, (base, values) in enumerate(report["drdo_win_rate"].items()):
        rates = np.array([values[f]["win_rate"] for f in fracs])
        cis = [values[f]["ci95"] or [values[f]["win_rate"]] * 2 for f in fracs]
        err = np.array([[r - c[0] for r, c in zip(rates, cis)], [c[1] - r for r, c in zip(rates, cis)]])
        ax2.errorbar(
            np.array(xs) + 0.01 * (i - 1),
            rates,
            yerr=err,
            marker="o",
            capsize=3,
            color=COLORS[i + 1],
            label=f"DRDO vs {base}",
        )
    ax2.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax2.set(
        xlabel="non-deterministic fraction",
        ylabel="true-reward win rate",
        ylim=(0, 1),
        title="DRDO win rate (ties half, 95% bootstrap CI)",
    )
    ax2.legend()
    _save(fig, path)


def _print_table(report: dict[str, Any], console: Console) -> None:
    fracs = list(report["oracle_accuracy"])
    table = Table(
        title=f"bench quality: mean true reward (optimum {report['reference_true_reward']['optimum']:g}, "
        f"random init {report['reference_true_reward']['random_init']:.2f})"
    )
    table.add_column("method")
    for f in fracs:
        table.add_column(f"non-det {f}", justify="right")
    for method, values in report["mean_true_reward"].items():
        table.add_row(method, *[f"{values[f]:.3f}" for f in fracs])
    for base, values in report["drdo_win_rate"].items():
        table.add_row(
            f"DRDO win vs {base}", *[fmt_rate(values[f]["win_rate"], values[f]["ci95"]) for f in fracs]
        )
    table.add_row("Oracle accuracy", *[f"{100 * report['oracle_accuracy'][f]:.1f}%" for f in fracs])
    console.print(table)
    console.print(f"wall time {report['timings']['wall_s'] / 60:.1f} min")
