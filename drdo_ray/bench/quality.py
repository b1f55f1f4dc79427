"""`drdo-ray bench quality`: does DRDO align, and is it more robust to non-deterministic pairs
than DPO, IPO and e-DPO? A controlled task whose true reward r* is a known program
(synthetic.py), measured exactly.

The protocol, per seed:
1. Prompts are split into train / validation / test (disjoint templates per topic).
2. A word-level tiny model is SFT'd on noisy demonstrations for the train prompts.
3. A fixed set of deterministic preference pairs (|Δr*| > tie_eps, Bradley-Terry labels, a share
   flipped) is drawn from a response generator unlike the SFT policy (off-policy, the default;
   or SFT samples, ``pairs_source=onpolicy``). Each non-deterministic share s ADDS
   s/(1-s) x |deterministic| tie pairs (Δr* ≈ 0, coin-flip labels): every share keeps the same
   informative pairs, only the noise grows.
4. Per share: the Oracle (Eq. 4) and e-DPO's 3 Bradley-Terry Oracles train on those pairs for
   ``epochs`` epochs and score them; their accuracy against r* is measured on held-out
   deterministic pairs of the validation prompts.
5. Per share: every method trains from the SFT model for the same epochs, batches and seed.

Tuning: on seed 0 at ``tune_share``, every method runs a small fixed grid and keeps the values
with the best mean r* on the VALIDATION prompts; every reported figure is then on the TEST
prompts, for every seed and share, with those values. Extra rows: DRDO at the paper's defaults
(``drdo_paper``) and tuned DRDO distilling the true reward instead of an Oracle
(``drdo_true_r``, an upper bound on what a better Oracle could give).

Every training stage goes through THE loop directly (no Ray), exported through the same
callback Ray Train uses; the report and figure come from quality_report.py."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from .. import storage
from ..config import TrainConfig, edpo_oracle_settings
from ..losses import LOSS_INPUTS
from ..models import PolicyWithRewardHead
from ..train.loop import load_model
from ..train.stage import reduction_of
from . import synthetic as syn
from .quality_config import BenchQualityConfig
from .quality_report import build_report, plot_report, print_report
from .toy_lm import Progress, Words, build_model, objects, pair_scores, sample, train

EDPO_ORACLES = 3
PAPER_DRDO = {"alpha": 0.1, "gamma": 2.0, "distill_weight": 1.0, "distill_trunk": "full"}
# Report rows beyond the tuned methods: (row, loss, where its hyperparameters come from, Oracle).
EXTRA_ROWS = {"drdo_paper": ("drdo", "paper", "oracle"), "drdo_true_r": ("drdo", "drdo", "true")}


def share_key(share: float) -> str:
    return f"{share:g}"


def _freeze(hparams: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(hparams.items()))


@dataclass
class ShareData:
    """One (seed, share): the training columns (Oracle rewards and reference log-probs added)."""

    run_dir: Path
    columns: dict[str, Any]
    stats: dict[str, float]


class QualityBench:
    """State of one benchmark run: trained models, their samples, the tuning results."""

    def __init__(self, cfg: BenchQualityConfig, console: Console) -> None:
        self.cfg, self.console = cfg, console
        self.paper = dict(PAPER_DRDO)
        self.words = Words()
        self.work = Path(tempfile.mkdtemp(prefix="drdo-bench-quality-"))
        self.temps = list(cfg.temperatures)
        self.methods = list(dict.fromkeys(cfg.methods))
        self.oracles = ["oracle"] + (
            [f"oracle-bt{k}" for k in range(EDPO_ORACLES)] if "edpo" in self.methods else []
        )
        self.shares = cfg.effective_shares()
        self.n_pairs = max(1, round(cfg.pairs * cfg.scale))
        self.n_sft_rows = max(1, round(cfg.sft_rows * cfg.scale))
        self.n_sft_steps = max(1, round(cfg.sft_steps * cfg.scale))
        self.grid = {m: cfg.grid_of(m) for m in self.methods}
        self.progress = Progress(console, self._stage_count())
        # rewards[row][share][seed] -> (prompt, temperature, sample) true rewards on the test prompts
        self.rewards: dict[str, dict[str, dict[int, np.ndarray]]] = {}
        self.tuning: dict[str, list[dict[str, Any]]] = {}
        self.tuned: dict[str, dict[str, Any]] = {}
        self.oracle_acc: dict[str, dict[str, list[float]]] = {share_key(s): {} for s in self.shares}
        self.data_stats: dict[str, list[dict[str, float]]] = {share_key(s): [] for s in self.shares}
        self.train_curves: dict[str, dict[str, list[list[dict[str, float]]]]] = {}
        self.term_grads: dict[str, dict[str, list[dict[str, float]]]] = {}
        self._trained: dict[tuple[Any, ...], tuple[Path, list[dict[str, float]]]] = {}

    # ------------------------------------------------------------------ bookkeeping

    def _stage_count(self) -> int:
        per_share = len(self.oracles) + len(self.methods) + len(EXTRA_ROWS)
        grid_extra = sum(len(g) for g in self.grid.values()) - len(self.methods)
        return self.cfg.seeds * (1 + len(self.shares) * per_share) + grid_extra

    def _common(self, run_dir: Path, seed: int, rows: int, *, epochs: int) -> dict[str, Any]:
        steps_per_epoch = max(1, rows // self.cfg.batch_size)
        return dict(
            data="-",
            run_dir=str(run_dir),
            micro_batch_size=self.cfg.batch_size,
            num_workers=1,
            epochs=epochs,
            checkpoint_every=0,
            warmup_steps=min(self.cfg.warmup_steps, epochs * steps_per_epoch - 1),
            seed=seed,
            log_every=steps_per_epoch,  # one metrics row per epoch: the convergence curve
            shuffle=True,
        )

    # ------------------------------------------------------------------ data

    def _pool(
        self, prompts: list[list[str]], sft_model: torch.nn.Module, rng: np.random.Generator, seed: int
    ) -> syn.Pool:
        """Candidate responses per prompt: the off-policy generator's, or the SFT model's samples."""
        size = self.cfg.pool_size
        if self.cfg.pairs_source == "offpolicy":
            return {tuple(p): [syn.offpolicy_response(p, rng) for _ in range(size)] for p in prompts}
        drawn = sample(
            sft_model,
            [self.words.encode(p) for p in prompts],
            self.words,
            temperature=1.0,
            n=size,
            max_new_tokens=self.cfg.max_new_tokens,
            top_p=1.0,
            seed=seed * 1000 + 999,
        )
        return {tuple(p): ys for p, ys in zip(prompts, drawn)}

    def _columns(self, pairs: Sequence[syn.Pair]) -> dict[str, Any]:
        w = self.words
        return {
            "prompt_ids": objects([w.encode(q.prompt) for q in pairs]),
            "chosen_ids": objects([w.encode(q.chosen, eos=True) for q in pairs]),
            "rejected_ids": objects([w.encode(q.rejected, eos=True) for q in pairs]),
        }

    @staticmethod
    def _stats(pairs: Sequence[syn.Pair], seed: int) -> dict[str, float]:
        det = [q for q in pairs if not q.tie]
        ties = [q for q in pairs if q.tie]
        return {
            "seed": seed,
            "pairs": len(pairs),
            "deterministic": len(det),
            "nondeterministic": len(ties),
            "nondeterministic_share": len(ties) / len(pairs),
            "flipped_share_of_deterministic": float(np.mean([q.flipped for q in det])) if det else 0.0,
            "labels_agree_with_r*_deterministic": float(np.mean([q.delta > 0 for q in det])) if det else 0.0,
            "mean_abs_delta_deterministic": float(np.mean([abs(q.delta) for q in det])) if det else 0.0,
            "max_abs_delta_nondeterministic": float(max((abs(q.delta) for q in ties), default=0.0)),
        }

    # ------------------------------------------------------------------ stages

    def _oracles(
        self, seed: int, share: str, data: ShareData, sft: Path, held: tuple[list, list, list, np.ndarray]
    ) -> None:
        cols = data.columns
        for name in self.oracles:
            k = 0 if name == "oracle" else int(name[-1])
            with self.progress.stage(f"seed {seed} s={share} {name}", "train"):
                cfg = TrainConfig(
                    stage="oracle",
                    name=name,
                    model=str(sft),
                    lr=self.cfg.oracle_lr,
                    # e-DPO's Oracles: plain Bradley-Terry, head seed k; the Oracle keeps head seed 0.
                    **({"head_seed": k} if name == "oracle" else edpo_oracle_settings(k)),
                    **self._common(
                        data.run_dir, seed, len(cols["prompt_ids"]), epochs=self.cfg.oracle_epochs
                    ),
                )
                oracle = PolicyWithRewardHead.from_pretrained(
                    train(cfg, cols, pad_id=self.words.pad)
                ).freeze()
                sc = pair_scores(
                    oracle,
                    list(cols["prompt_ids"]),
                    list(cols["chosen_ids"]),
                    list(cols["rejected_ids"]),
                    pad_id=self.words.pad,
                )
                suffix = "" if name == "oracle" else f"_{k}"
                cols[f"oracle_chosen{suffix}"], cols[f"oracle_rejected{suffix}"] = sc["rw"], sc["rl"]
                hs = pair_scores(oracle, *held[:3], pad_id=self.words.pad)
                acc = float(np.mean(np.sign(hs["rw"] - hs["rl"]) == held[3]))
                self.oracle_acc[share].setdefault(name, []).append(acc)

    def _align(
        self,
        seed: int,
        share: str,
        data: ShareData,
        sft: Path,
        loss: str,
        hparams: dict[str, Any],
        oracle: str,
        label: str,
    ) -> Path:
        """Train one method (cached by its settings) and return its model folder."""
        key = (seed, share, loss, _freeze(hparams), oracle)
        if key in self._trained:  # a tuning run reused as a report row: same settings, same model
            out, curve = self._trained[key]
            self.train_curves.setdefault(label, {}).setdefault(share, []).append(curve)
            return out
        cols = dict(data.columns)
        if oracle == "true":
            cols["oracle_chosen"], cols["oracle_rejected"] = cols["true_chosen"], cols["true_rejected"]
        name = f"align-{len(self._trained)}-{loss}"
        with self.progress.stage(f"seed {seed} s={share} {label}", "train"):
            cfg = TrainConfig(
                stage="align",
                loss=loss,
                name=name,
                model=str(sft),
                lr=self.cfg.lr_of(loss),
                reduction=self.cfg.reduction.get(loss),
                **{"gamma": self.cfg.gamma, **hparams},
                **self._common(data.run_dir, seed, len(cols["prompt_ids"]), epochs=self.cfg.epochs),
            )
            red = reduction_of(cfg)
            cols["ref_chosen_logps"], cols["ref_rejected_logps"] = (
                cols[f"ref_zw_{red}"],
                cols[f"ref_zl_{red}"],
            )
            out = train(
                cfg,
                cols,
                pad_id=self.words.pad,
                extra=LOSS_INPUTS[loss],
                edpo_oracles=EDPO_ORACLES if loss == "edpo" else 0,
            )
        metrics = data.run_dir / "train" / name / "metrics.jsonl"
        curve = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        keep = (
            "step",
            "epoch",
            "loss",
            "reward_accuracy",
            "margin",
            "chosen_logps",
            "rejected_logps",
            "term_grad_norm_distill",
            "term_grad_norm_contrastive",
            "term_grad_cosine",
        )
        curve = [{k: float(r[k]) for k in keep if isinstance(r.get(k), int | float)} for r in curve]
        self.train_curves.setdefault(label, {}).setdefault(share, []).append(curve)
        self._trained[key] = (out, curve)
        return out

    def _sample_rewards(self, model_dir: Path, prompts: list[list[str]], seed: int) -> np.ndarray:
        """True rewards of samples, (prompt, temperature, sample); the same random stream for
        every model of a seed (common random numbers)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        ids = [self.words.encode(p) for p in prompts]
        grid = np.zeros((len(prompts), len(self.temps), self.cfg.samples_per_prompt))
        for t, temp in enumerate(self.temps):
            ys = sample(
                model,
                ids,
                self.words,
                temperature=temp,
                n=self.cfg.samples_per_prompt,
                max_new_tokens=self.cfg.max_new_tokens,
                top_p=self.cfg.top_p,
                seed=seed * 1000 + t,
            )
            for p, (prompt, samples) in enumerate(zip(prompts, ys)):
                grid[p, t] = [syn.true_reward(prompt, y) for y in samples]
        return grid

    def _term_gradients(
        self, seed: int, share: str, data: ShareData, sft: Path, hparams: dict[str, Any]
    ) -> dict:
        """DRDO's per-term gradients on the trunk's parameters at step 0 (the SFT model, a fresh head)."""
        from ..train.batches import Collator
        from ..train.diagnostics import term_gradients

        cfg = TrainConfig(
            stage="align",
            loss="drdo",
            model=str(sft),
            term_grads_wrt="params",  # on the trunk's parameters: the output's supports are disjoint
            **{"gamma": self.cfg.gamma, **hparams},
            **self._common(data.run_dir, seed, len(data.columns["prompt_ids"]), epochs=1),
        )
        model = load_model(cfg)  # the head, and the trunk's gradient scale of cfg.distill_trunk
        collate = Collator(pad_id=self.words.pad, pairs=True, extra=("oracle_chosen", "oracle_rejected"))
        order = np.random.default_rng([seed, 0]).permutation(len(data.columns["prompt_ids"]))
        rows = []
        for b in range(self.cfg.diagnostic_batches):
            idx = order[b * self.cfg.batch_size : (b + 1) * self.cfg.batch_size]
            batch = collate(
                {
                    k: v[idx]
                    for k, v in data.columns.items()
                    if k in ("prompt_ids", "chosen_ids", "rejected_ids", "oracle_chosen", "oracle_rejected")
                }
            )
            batch.pop("num_rows")
            rows.append(term_gradients(model, batch, cfg))
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    # ------------------------------------------------------------------ the protocol

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        self.console.print(
            f"bench quality: {cfg.seeds} seed(s) x shares {self.shares}, methods {self.methods}, pairs "
            f"{cfg.pairs_source}, {cfg.epochs} epochs; tuning on seed 0 at share {cfg.tune_share:g}; "
            f"work dir {self.work}"
        )
        sft_rewards: dict[int, np.ndarray] = {}
        init_rewards: dict[int, np.ndarray] = {}
        for seed in range(cfg.seeds):
            rng = np.random.default_rng([seed, 1234])
            seed_dir = self.work / f"seed{seed}"
            splits = syn.split_prompts(seed)
            init = build_model(
                seed_dir / "init",
                self.words,
                seed=seed,
                hidden_size=cfg.hidden_size,
                num_layers=cfg.num_layers,
            )
            # SFT on noisy demonstrations of the train prompts.
            with self.progress.stage(f"seed {seed} sft", "train"):
                prompts = [
                    splits["train"][int(i)] for i in rng.integers(len(splits["train"]), size=self.n_sft_rows)
                ]
                demos = [syn.demonstration(p, rng) for p in prompts]
                sft_cfg = TrainConfig(
                    stage="sft",
                    name="sft",
                    model=str(init),
                    lr=cfg.sft_lr,
                    **{**self._common(seed_dir, seed, len(prompts), epochs=1), "max_steps": self.n_sft_steps},
                )
                sft = train(
                    sft_cfg,
                    {
                        "prompt_ids": objects([self.words.encode(p) for p in prompts]),
                        "chosen_ids": objects([self.words.encode(d, eos=True) for d in demos]),
                    },
                    pad_id=self.words.pad,
                )
                init_rewards[seed] = self._sample_rewards(init, splits["test"], seed)
                sft_rewards[seed] = self._sample_rewards(sft, splits["test"], seed)

            from transformers import AutoModelForCausalLM

            sft_model = AutoModelForCausalLM.from_pretrained(sft)  # pools and reference log-probs
            pool = self._pool(splits["train"], sft_model, rng, seed)
            det = syn.deterministic_pairs(
                pool, self.n_pairs, rng=rng, tie_eps=cfg.tie_eps, bt_scale=cfg.bt_scale, flip=cfg.flip
            )
            ties = syn.tie_pairs(
                pool, syn.ties_for_share(self.n_pairs, max(self.shares)), rng=rng, tie_eps=cfg.tie_eps
            )
            held_pool = self._pool(splits["validation"], sft_model, rng, seed + 500)
            held = syn.deterministic_pairs(
                held_pool, cfg.heldout_pairs, rng=rng, tie_eps=cfg.tie_eps, bt_scale=cfg.bt_scale, flip=0.0
            )
            held_cols = self._columns(held)
            held_args = (
                list(held_cols["prompt_ids"]),
                list(held_cols["chosen_ids"]),
                list(held_cols["rejected_ids"]),
                np.sign([q.delta for q in held]),
            )
            # The tuning share first, so that seed 0 picks every method's values before using them.
            for share in sorted(self.shares, key=lambda s: s != cfg.tune_share):
                sk = share_key(share)
                pairs = det + ties[: syn.ties_for_share(self.n_pairs, share)]
                data = ShareData(seed_dir / f"share{sk}", self._columns(pairs), self._stats(pairs, seed))
                self.data_stats[sk].append(data.stats)
                cols = data.columns
                cols["true_chosen"] = np.array([syn.true_reward(q.prompt, q.chosen) for q in pairs])
                cols["true_rejected"] = np.array([syn.true_reward(q.prompt, q.rejected) for q in pairs])
                ref = pair_scores(
                    sft_model,
                    list(cols["prompt_ids"]),
                    list(cols["chosen_ids"]),
                    list(cols["rejected_ids"]),
                    pad_id=self.words.pad,
                )
                for red in ("sum", "mean"):
                    cols[f"ref_zw_{red}"], cols[f"ref_zl_{red}"] = ref[f"zw_{red}"], ref[f"zl_{red}"]
                self._oracles(seed, sk, data, sft, held_args)

                if seed == 0 and share == cfg.tune_share:
                    self._tune(seed, sk, data, sft, splits["validation"])
                for row in [*self.methods, *EXTRA_ROWS]:
                    loss, source, oracle = EXTRA_ROWS.get(row, (row, row, "oracle"))
                    if oracle == "oracle" and loss == "edpo":
                        oracle = "ensemble"
                    hparams = PAPER_DRDO if source == "paper" else self.tuned[source]
                    model_dir = self._align(seed, sk, data, sft, loss, hparams, oracle, row)
                    self.rewards.setdefault(row, {}).setdefault(sk, {})[seed] = self._sample_rewards(
                        model_dir, splits["test"], seed
                    )
                self.term_grads.setdefault(sk, {})
                for label, hp in (("drdo_paper", PAPER_DRDO), ("drdo", self.tuned["drdo"])):
                    self.term_grads[sk].setdefault(label, []).append(
                        self._term_gradients(seed, sk, data, sft, hp)
                    )

        for sk in map(share_key, self.shares):
            self.rewards.setdefault("sft", {})[sk] = sft_rewards
            self.rewards.setdefault("init", {})[sk] = init_rewards
        return build_report(self, time.perf_counter() - started)

    def _tune(self, seed: int, share: str, data: ShareData, sft: Path, validation: list[list[str]]) -> None:
        """Each method's grid on the validation prompts; the best mean r* wins (the first on ties)."""
        sft_score = float(self._sample_rewards(sft, validation, seed + 7000).mean())
        self.tuning["sft"] = [{"hyperparameters": {}, "validation_mean_true_reward": sft_score}]
        for method in self.methods:
            results = []
            for hparams in self.grid[method]:
                oracle = "ensemble" if method == "edpo" else "oracle"
                label = f"tune {method} {','.join(f'{k}={v}' for k, v in hparams.items())}"
                model_dir = self._align(seed, share, data, sft, method, hparams, oracle, label)
                score = float(self._sample_rewards(model_dir, validation, seed + 7000).mean())
                results.append({"hyperparameters": hparams, "validation_mean_true_reward": score})
            self.tuning[method] = results
            self.tuned[method] = max(results, key=lambda r: r["validation_mean_true_reward"])[
                "hyperparameters"
            ]
            self.console.print(f"  tuned {method}: {self.tuned[method]}")
        if "drdo" not in self.tuned:
            raise ValueError("methods must include drdo")


def bench_quality(cfg: BenchQualityConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    torch.set_num_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # dozens of "Loading weights" bars otherwise
    bench = QualityBench(cfg, console)
    report = bench.run()
    storage.makedirs(cfg.out)
    report["outputs"] = {
        "report": storage.join(cfg.out, "bench_quality.json"),
        "plot": storage.join(cfg.out, "bench_quality.png"),
    }
    storage.write_json(report["outputs"]["report"], report)
    plot_report(report, report["outputs"]["plot"])
    print_report(report, console)
    return report
