"""`drdo-ray bench quality`: does DRDO align, does its reward distillation help, and is it more
robust to non-deterministic pairs than DPO, IPO and e-DPO? A controlled task whose true reward r*
is a known program (synthetic.py), measured exactly.

The protocol, per seed:
1. Prompts are split into train / validation / test (disjoint templates per topic).
2. A word-level tiny model is SFT'd on noisy demonstrations of the train prompts (a weak start by
   default, so preference learning has room to gain).
3. From an off-policy response pool, three kinds of labelled pairs are drawn (synthetic.py):
   deterministic (|Δr*| ≥ 1.5, Bradley-Terry labels, 10% flipped), low-margin (|Δr*| in
   {0.5, 1}, Bradley-Terry labels) and exact ties (coin-flip labels).
4. A condition is an arm (ties or low-margin) and a share s: N training pairs of which s·N are the
   arm's pairs and the rest deterministic (non-deterministic pairs REPLACE deterministic ones, so
   every condition trains for the same steps). Share 0 is shared by both arms.
5. Per condition, the Oracle (Eq. 4) and e-DPO's 3 Bradley-Terry Oracles train on the pairs and
   score them; then every row trains from the SFT model for the same epochs and batches, and its
   samples of the test prompts are scored with r*.

Tuning runs first, on separate tuning seeds at one condition, scored on the validation prompts
(quality_tuning.py); no tuning run is ever reported. Every training stage goes through THE loop
directly (no Ray), exported through the callback Ray Train uses; the statistics, report and
figure come from quality_stats.py and quality_report.py."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from .. import storage
from ..artifacts import edpo_oracle_name
from ..config import TrainConfig, edpo_oracle_settings
from ..losses import LOSS_INPUTS
from ..models import PolicyWithRewardHead
from ..run_layout import RunLayout
from ..train.loop import load_model
from ..train.stage import reduction_of
from . import synthetic as syn
from .quality_config import CONTROLS, METHODS, PAPER_DRDO, BenchQualityConfig, Method, condition_key
from .quality_report import QualityResults, build_report, plot_report, print_report
from .quality_tuning import Cell, tune
from .toy_lm import Progress, Words, build_model, objects, pair_scores, sample, train

EDPO_ORACLES = 3
# Sampling streams: the same for every model of a seed (common random numbers), apart per split.
_STREAM = {"test": 0, "validation": 7000}
# Metrics of a training run kept in the report (its last logged epoch).
_KEEP = ("step", "loss", "reward_accuracy", "margin", "chosen_logps", "rejected_logps", "nll")


@dataclass
class SeedWorld:
    """What one seed fixes before any condition: prompts, the SFT model, the pools and the pairs."""

    seed: int
    root: Path
    sft: Path
    splits: dict[str, list[list[str]]]
    deterministic: list[syn.Pair]
    nondeterministic: dict[str, list[syn.Pair]]  # by arm, enough for the largest share
    heldout: dict[str, tuple[list, list, list, np.ndarray]]  # by kind: Oracle accuracy pairs
    sft_model: Any = None


@dataclass
class Condition:
    """One (seed, arm, share): its training columns (Oracle rewards, reference log-probs added)."""

    key: str
    root: Path
    columns: dict[str, Any]
    stats: dict[str, float]
    trained: dict[tuple, tuple[Path, dict[str, float]]] = field(default_factory=dict)
    oracles: dict[str, Path] = field(default_factory=dict)  # by name: the trained Oracles' folders


class QualityBench:
    def __init__(self, cfg: BenchQualityConfig, console: Console) -> None:
        self.cfg, self.console = cfg, console
        self.words = Words()
        self.work = Path(tempfile.mkdtemp(prefix="drdo-bench-quality-"))
        self.conditions = ["0"] + [condition_key(a, s) for a in cfg.arms for s in cfg.shares if s > 0]
        self.tune_condition = condition_key(cfg.tune_arm, cfg.tune_share)
        self.needs_oracle = any(self._distills(r) == "oracle" for r in cfg.rows())
        self.needs_edpo = "edpo" in cfg.methods
        oracles = int(self.needs_oracle) + EDPO_ORACLES * self.needs_edpo
        start_cells = sum(len(self._start_grid(m)) for m in cfg.methods)
        per_condition = oracles + len(cfg.rows())
        self.tuning_stages = len(cfg.tune_seeds) * (1 + oracles + start_cells)
        total = self.tuning_stages + len(cfg.seeds) * (1 + len(self.conditions) * per_condition)
        self.progress = Progress(console, total)
        self.tuned: dict[str, Cell] = {}
        self.tuning: dict[str, dict[str, Any]] = {}
        self.results = QualityResults(cfg=cfg, conditions=self.conditions)

    # ------------------------------------------------------------------ recipes

    def _distills(self, row: str) -> str:
        if row in METHODS:
            return METHODS[row].distills
        control = CONTROLS[row]
        return control.distills or METHODS[control.method].distills

    @staticmethod
    def _start_grid(method: str) -> list[int]:
        size = 1
        for axis in METHODS[method].axes:
            size *= len(axis.start)
        return list(range(size))

    def _settings(self, row: str, tuned: dict[str, Cell] | None = None) -> tuple[Method, dict[str, Any], int]:
        """A row's recipe, its settings (lr included; from ``tuned``, this run's tuning by default)
        and its training-seed offset."""
        tuned = self.tuned if tuned is None else tuned
        if row in METHODS:
            return METHODS[row], dict(tuned[row]), 0
        control = CONTROLS[row]
        if control.settings == "paper":
            settings = {**PAPER_DRDO, "lr": self.cfg.paper_lr}
        else:
            settings = dict(tuned[control.settings])
        return METHODS[control.method], settings, control.train_seed_offset

    def _common(self, root: Path, seed: int, rows: int, *, epochs: int) -> dict[str, Any]:
        steps_per_epoch = max(1, rows // self.cfg.batch_size)
        return dict(
            data="-",
            run_dir=str(root),
            micro_batch_size=self.cfg.batch_size,
            num_workers=1,
            epochs=epochs,
            checkpoint_every=0,
            warmup_steps=min(self.cfg.warmup_steps, epochs * steps_per_epoch - 1),
            seed=seed,
            log_every=steps_per_epoch,  # one metrics row per epoch
            shuffle=True,
        )

    # ------------------------------------------------------------------ data

    def _encode_pairs(self, pairs: list[syn.Pair]) -> dict[str, Any]:
        w = self.words
        return {
            "prompt_ids": objects([w.encode(q.prompt) for q in pairs]),
            "chosen_ids": objects([w.encode(q.chosen, eos=True) for q in pairs]),
            "rejected_ids": objects([w.encode(q.rejected, eos=True) for q in pairs]),
        }

    def _world(self, seed: int) -> SeedWorld:
        """SFT, response pools and every pair the seed's conditions draw from (one random stream,
        drawn in this order: SFT data, the train pool, the pairs, the validation pool, held-out pairs)."""
        from transformers import AutoModelForCausalLM

        cfg = self.cfg
        rng = np.random.default_rng([seed, 1234])
        root = self.work / f"seed{seed}"
        splits = syn.split_prompts(seed)
        init = build_model(
            root / "init", self.words, seed=seed, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers
        )
        sft = self._sft(seed, root, init, splits["train"], rng)
        pool = {
            tuple(p): [syn.offpolicy_response(p, rng) for _ in range(cfg.pool_size)] for p in splits["train"]
        }
        n_nondet = syn.nondeterministic_count(cfg.pairs, max(cfg.shares))
        det_band, low_band = (cfg.deterministic_margin, np.inf), tuple(cfg.lowmargin_band)
        det = syn.labelled_pairs(
            pool, cfg.pairs, rng=rng, margin=det_band, bt_scale=cfg.bt_scale, flip=cfg.flip
        )
        nondet = {
            "ties": syn.tie_pairs(pool, n_nondet, rng=rng),
            "lowmargin": syn.labelled_pairs(
                pool, n_nondet, rng=rng, margin=low_band, bt_scale=cfg.bt_scale, kind="lowmargin"
            ),
        }
        held_pool = {
            tuple(p): [syn.offpolicy_response(p, rng) for _ in range(cfg.pool_size)]
            for p in splits["validation"]
        }
        heldout = {}
        for kind, band in (("deterministic", det_band), ("lowmargin", low_band)):
            held = syn.labelled_pairs(
                held_pool, cfg.heldout_pairs, rng=rng, margin=band, bt_scale=cfg.bt_scale
            )
            cols = self._encode_pairs(held)
            heldout[kind] = (
                list(cols["prompt_ids"]),
                list(cols["chosen_ids"]),
                list(cols["rejected_ids"]),
                np.sign([q.delta for q in held]),
            )
        world = SeedWorld(seed, root, sft, splits, det, nondet, heldout)
        world.sft_model = AutoModelForCausalLM.from_pretrained(sft)  # reference log-probs
        self.results.reference.setdefault("random_init", {})[seed] = float(
            self._sample_rewards(init, splits["test"], seed, "test").mean()
        )
        return world

    def _sft(
        self, seed: int, root: Path, init: Path, prompts: list[list[str]], rng: np.random.Generator
    ) -> Path:
        """SFT of the random-init model on noisy demonstrations of the train prompts."""
        cfg = self.cfg
        with self.progress.stage(f"seed {seed} sft", "train"):
            rows = [prompts[int(i)] for i in rng.integers(len(prompts), size=cfg.sft_rows)]
            demos = [syn.demonstration(p, rng) for p in rows]
            sft_cfg = TrainConfig(
                stage="sft",
                name="sft",
                model=str(init),
                lr=cfg.sft_lr,
                **{**self._common(root, seed, len(rows), epochs=1), "max_steps": cfg.sft_steps},
            )
            columns = {
                "prompt_ids": objects([self.words.encode(p) for p in rows]),
                "chosen_ids": objects([self.words.encode(d, eos=True) for d in demos]),
            }
            return train(sft_cfg, columns, pad_id=self.words.pad)

    def _condition(self, world: SeedWorld, key: str) -> Condition:
        arm, _, share = key.partition(":")
        pairs = syn.mixed_pairs(world.deterministic, world.nondeterministic.get(arm, []), float(share or 0))
        cols = self._encode_pairs(pairs)
        cols["true_chosen"] = np.array([syn.true_reward(q.prompt, q.chosen) for q in pairs])
        cols["true_rejected"] = np.array([syn.true_reward(q.prompt, q.rejected) for q in pairs])
        ref = pair_scores(
            world.sft_model,
            list(cols["prompt_ids"]),
            list(cols["chosen_ids"]),
            list(cols["rejected_ids"]),
            pad_id=self.words.pad,
        )
        for red in ("sum", "mean"):
            cols[f"ref_zw_{red}"], cols[f"ref_zl_{red}"] = ref[f"zw_{red}"], ref[f"zl_{red}"]
        stats = pair_stats(pairs, world.seed)
        stats["steps"] = self.cfg.epochs * (len(pairs) // self.cfg.batch_size)
        cond = Condition(key, world.root / key.replace(":", "-"), cols, stats)
        self._oracles(world, cond)
        return cond

    # ------------------------------------------------------------------ stages

    def _oracles(self, world: SeedWorld, cond: Condition) -> None:
        names = (["oracle"] if self.needs_oracle else []) + (
            [edpo_oracle_name("oracle", k) for k in range(EDPO_ORACLES)] if self.needs_edpo else []
        )
        cols = cond.columns
        for k, name in enumerate(names, start=-1 if self.needs_oracle else 0):
            with self.progress.stage(f"seed {world.seed} {cond.key} {name}", "train"):
                cfg = TrainConfig(
                    stage="oracle",
                    name=name,
                    model=str(world.sft),
                    lr=self.cfg.oracle_lr,
                    # e-DPO's Oracles: plain Bradley-Terry, head seed k; the Oracle keeps head seed 0.
                    **({"head_seed": 0} if k < 0 else edpo_oracle_settings(k)),
                    **self._common(
                        cond.root, world.seed, len(cols["prompt_ids"]), epochs=self.cfg.oracle_epochs
                    ),
                )
                cond.oracles[name] = train(cfg, cols, pad_id=self.words.pad)
                oracle = PolicyWithRewardHead.from_pretrained(cond.oracles[name]).freeze()
                sc = pair_scores(
                    oracle,
                    list(cols["prompt_ids"]),
                    list(cols["chosen_ids"]),
                    list(cols["rejected_ids"]),
                    pad_id=self.words.pad,
                )
            suffix = "" if k < 0 else f"_{k}"
            cols[f"oracle_chosen{suffix}"], cols[f"oracle_rejected{suffix}"] = sc["rw"], sc["rl"]
            if k < 0:
                for kind, held in world.heldout.items():
                    hs = pair_scores(oracle, *held[:3], pad_id=self.words.pad)
                    acc = float(np.mean(np.sign(hs["rw"] - hs["rl"]) == held[3]))
                    self.results.oracle_accuracy.setdefault(cond.key, {}).setdefault(kind, {})[world.seed] = (
                        acc
                    )

    def _train(
        self,
        world: SeedWorld,
        cond: Condition,
        method: Method,
        settings: dict[str, Any],
        *,
        distills: str,
        offset: int,
        start: Path | None = None,
    ) -> tuple[Path, dict[str, float]]:
        """Train one row from ``start`` (the SFT model by default), cached by its recipe and
        settings; its model folder and last metrics."""
        start = start or world.sft
        key = (method, tuple(sorted(settings.items())), distills, offset, start)
        if key in cond.trained:
            return cond.trained[key]
        cols = dict(cond.columns)
        name = f"row-{len(cond.trained)}"
        common = self._common(cond.root, world.seed + offset, len(cols["prompt_ids"]), epochs=self.cfg.epochs)
        if method.stage == "sft":
            cfg = TrainConfig(stage="sft", name=name, model=str(start), **settings, **common)
            out = train(cfg, {k: cols[k] for k in ("prompt_ids", "chosen_ids")}, pad_id=self.words.pad)
        else:
            if distills == "true":
                cols["oracle_chosen"], cols["oracle_rejected"] = cols["true_chosen"], cols["true_rejected"]
            cfg = TrainConfig(
                stage="align",
                loss=method.loss,
                name=name,
                model=str(start),
                reduction=method.reduction,
                **settings,
                **common,
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
                extra=LOSS_INPUTS[method.loss],
                edpo_oracles=EDPO_ORACLES if distills == "edpo" else 0,
            )
        lines = Path(RunLayout(str(cond.root)).metrics(name)).read_text().splitlines()
        last = json.loads([line for line in lines if line.strip()][-1])
        cond.trained[key] = (out, {k: float(last[k]) for k in _KEEP if isinstance(last.get(k), int | float)})
        return cond.trained[key]

    def _sample_rewards(self, model_dir: Path, prompts: list[list[str]], seed: int, split: str) -> np.ndarray:
        """True rewards of samples, (prompt, temperature, sample); the same random stream for every
        model of a seed and split (common random numbers)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        ids = [self.words.encode(p) for p in prompts]
        grid = np.zeros((len(prompts), len(self.cfg.temperatures), self.cfg.samples_per_prompt))
        for t, temp in enumerate(self.cfg.temperatures):
            ys = sample(
                model,
                ids,
                self.words,
                temperature=temp,
                n=self.cfg.samples_per_prompt,
                max_new_tokens=self.cfg.max_new_tokens,
                top_p=self.cfg.top_p,
                seed=seed * 1000 + _STREAM[split] + t,
            )
            for p, (prompt, samples) in enumerate(zip(prompts, ys)):
                grid[p, t] = [syn.true_reward(prompt, y) for y in samples]
        return grid

    def _term_gradients(
        self, world: SeedWorld, cond: Condition, settings: dict[str, Any]
    ) -> dict[str, float]:
        """DRDO's per-term gradients on the trunk's parameters at step 0 (the SFT model, a fresh head)."""
        from ..train.batches import Collator
        from ..train.diagnostics import term_gradients

        rows = len(cond.columns["prompt_ids"])
        cfg = TrainConfig(
            stage="align",
            loss="drdo",
            model=str(world.sft),
            term_grads_wrt="params",  # on the trunk's parameters: the output's supports are disjoint
            **settings,
            **self._common(cond.root, world.seed, rows, epochs=1),
        )
        model = load_model(cfg)  # the head, and the trunk's gradient scale of cfg.distill_trunk
        wanted = ("prompt_ids", "chosen_ids", "rejected_ids", "oracle_chosen", "oracle_rejected")
        collate = Collator(pad_id=self.words.pad, pairs=True, extra=wanted[3:])
        order = np.random.default_rng([world.seed, 0]).permutation(rows)
        out = []
        for b in range(self.cfg.diagnostic_batches):
            idx = order[b * self.cfg.batch_size : (b + 1) * self.cfg.batch_size]
            batch = collate({k: cond.columns[k][idx] for k in wanted})
            batch.pop("num_rows")
            out.append(term_gradients(model, batch, cfg))
        return {k: float(np.mean([r[k] for r in out])) for k in out[0]}

    # ------------------------------------------------------------------ the protocol

    def _tune(self) -> None:
        """Every method's grid by the edge rule, scored on the tuning seeds' validation prompts."""
        cfg = self.cfg
        worlds = {s: self._world(s) for s in cfg.tune_seeds}
        conds = {s: self._condition(w, self.tune_condition) for s, w in worlds.items()}
        sft = {
            s: float(self._sample_rewards(w.sft, w.splits["validation"], s, "validation").mean())
            for s, w in worlds.items()
        }
        self.tuning["sft"] = {"validation_mean_true_reward": sft}
        for method in cfg.methods:
            spec = METHODS[method]
            score = self._scorer(method, worlds, conds)
            result = tune(spec.axes, score, max_extensions=cfg.max_extensions)
            self.tuned[method] = result.winner()
            self.tuning[method] = result.as_dict()
            self.console.print(
                f"  tuned {method}: {self.tuned[method]} ({len(result.cells())} cells, "
                f"{len(result.extensions)} extension(s))"
            )

    def _scorer(
        self, method: str, worlds: dict[int, SeedWorld], conds: dict[int, Condition]
    ) -> Callable[[Cell], dict[int, float]]:
        """``score(cell)`` for the tuning of ``method``: train the cell on every tuning seed and return
        each seed's mean true reward on its validation prompts."""
        spec, start, calls = METHODS[method], len(self._start_grid(method)), [0]

        def score(cell: Cell) -> dict[int, float]:
            calls[0] += 1
            if calls[0] > start:  # a cell the edge rule added: the progress total grows
                self.progress.total += len(worlds)
            label = ",".join(f"{k}={v:g}" for k, v in cell.items())
            out = {}
            for s, world in worlds.items():
                with self.progress.stage(f"tune {method} {label} (seed {s})", "tune"):
                    model_dir, _ = self._train(world, conds[s], spec, cell, distills=spec.distills, offset=0)
                    rewards = self._sample_rewards(model_dir, world.splits["validation"], s, "validation")
                out[s] = float(rewards.mean())
            return out

        return score

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started, cpu_started = time.perf_counter(), time.process_time()
        self.console.print(
            f"bench quality: report seeds {cfg.seeds}, tuning seeds {cfg.tune_seeds} at {self.tune_condition}; "
            f"conditions {self.conditions}; rows {cfg.rows()}; work dir {self.work}"
        )
        self._tune()
        res = self.results
        for seed in cfg.seeds:
            world = self._world(seed)
            res.add_rewards(
                "sft",
                self.conditions,
                seed,
                self._sample_rewards(world.sft, world.splits["test"], seed, "test"),
            )
            for key in self.conditions:
                cond = self._condition(world, key)
                res.data.setdefault(key, []).append(cond.stats)
                for row in cfg.rows():
                    method, settings, offset = self._settings(row)
                    with self.progress.stage(f"seed {seed} {key} {row}", "train"):
                        model_dir, metrics = self._train(
                            world, cond, method, settings, distills=self._distills(row), offset=offset
                        )
                        rewards = self._sample_rewards(model_dir, world.splits["test"], seed, "test")
                    res.add_rewards(row, [key], seed, rewards)
                    res.train_metrics.setdefault(row, {}).setdefault(key, []).append(metrics)
                for label in ("drdo_paper", "drdo"):
                    if label in cfg.rows():
                        _, settings, _ = self._settings(label)
                        grads = self._term_gradients(
                            world, cond, {k: v for k, v in settings.items() if k != "lr"}
                        )
                        res.term_gradients.setdefault(key, {}).setdefault(label, []).append(grads)
        res.tuning = self.tuning
        res.tuned = self.tuned
        res.timings = {
            "wall_s": time.perf_counter() - started,
            # CPU seconds of this process: what the run costs whatever else the machine is doing
            # (one torch thread: on an idle machine the wall time is about this).
            "cpu_s": time.process_time() - cpu_started,
            **{f"{k}_s": v for k, v in self.progress.times.items()},
        }
        return build_report(res)


def pair_stats(pairs: list[syn.Pair], seed: int) -> dict[str, float]:
    """What a condition's training pairs are: counts by kind, flips, label agreement, margins."""
    by_kind = {k: [q for q in pairs if q.kind == k] for k in syn.PAIR_KINDS}
    det = by_kind["deterministic"]
    out: dict[str, float] = {"seed": seed, "pairs": len(pairs)}
    for kind, qs in by_kind.items():
        out[kind] = len(qs)
        if qs:
            if kind != "tie":  # a tie's label agrees with nothing
                out[f"{kind}_labels_agree_with_r*"] = float(np.mean([q.delta > 0 for q in qs]))
            out[f"{kind}_abs_delta_min"] = float(min(abs(q.delta) for q in qs))
            out[f"{kind}_abs_delta_max"] = float(max(abs(q.delta) for q in qs))
    out["nondeterministic_share"] = 1 - len(det) / len(pairs)
    out["flipped_share_of_deterministic"] = float(np.mean([q.flipped for q in det])) if det else 0.0
    return out


def bench_quality(cfg: BenchQualityConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    torch.set_num_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # dozens of "Loading weights" bars otherwise
    if cfg.regime == "online":
        from .quality_online import OnlineQualityBench
        from .quality_online_report import plot_online_report, print_online_report

        report = OnlineQualityBench(cfg, console).run()
        plot, show = plot_online_report, print_online_report
    else:
        report, plot, show = QualityBench(cfg, console).run(), plot_report, print_report
    storage.makedirs(cfg.out)
    report["outputs"] = {
        "report": storage.join(cfg.out, "bench_quality.json"),
        "plot": storage.join(cfg.out, "bench_quality.png"),
    }
    storage.write_json(report["outputs"]["report"], report)
    plot(report, report["outputs"]["plot"])
    show(report, console)
    return report
