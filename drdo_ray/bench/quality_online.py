"""The online regime of `drdo-ray bench quality`: do online rounds change the offline verdict?

Per seed, the world of the offline protocol (prompts, the SFT model, the deterministic pairs) and
ONE Oracle, trained once on those pairs (condition ``0``). Every row then trains twice from SFT:
- offline, on the deterministic pairs (as in the offline protocol);
- online, in rounds: the row's current policy samples the round's train prompts, the Oracle scores
  every sample, the best and worst sample of each prompt make a pair (with the Oracle's rewards and
  the SFT model's log-probs as the reference), and the row trains from its current policy on them.
  SFT on the best sample is the online imitation control. Each round's policy is scored with r* on
  the test prompts (mean r* per round).

Every round trains the same steps for every row, and every row sees the same prompts and random
streams (common random numbers). Settings: each method's offline-tuned settings (this run's offline
tuning, or ``tuned_from``), with the learning rate tuned again online by the same edge rule on the
tuning seeds (a 3-rung start around the offline winner, for every method alike); the paper's DRDO
stays untuned. The statistics are those of the offline protocol: per-seed paired differences with t
intervals over seeds (quality_online_report.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from .. import storage
from ..models import PolicyWithRewardHead
from . import synthetic as syn
from .quality import Condition, QualityBench, SeedWorld
from .quality_config import LR, BenchQualityConfig, online_row
from .quality_online_report import OnlineResults, build_online_report
from .quality_tuning import Axis, Cell, tune
from .toy_lm import Progress, objects, pair_scores, response_rewards, sample

# Random streams of the rounds (prompts and sampling), apart from the offline protocol's.
_ROUND_PROMPTS, _ROUND_SAMPLES = 5151, 30000


def best_vs_worst(rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (a row of ``rewards``, one column per sample): the index of its highest- and of
    its lowest-scored sample, the first of equals. A prompt whose samples all score alike pairs a
    sample with itself: it keeps the steps equal and gives the preference terms no gradient."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, samples ≥ 2), got shape {rewards.shape}")
    return rewards.argmax(axis=1), rewards.argmin(axis=1)


def online_lr_axis(lr: float) -> Axis:
    """The online learning-rate axis of a method whose offline winner is ``lr``: three adjacent
    rungs of the shared ladder centred on it (two at a ladder end)."""
    i = LR.index(lr)
    lo = max(0, i - 1)
    return Axis("lr", LR, LR[lo : i + 2])


class OnlineQualityBench(QualityBench):
    def __init__(self, cfg: BenchQualityConfig, console: Console) -> None:
        super().__init__(cfg, console)
        self.conditions = ["0"]
        self.needs_oracle = True  # it labels the rounds, whatever the rows distill
        self.online = OnlineResults(cfg=cfg)
        self.tuned_online: dict[str, Cell] = {}
        self._oracle: dict[int, PolicyWithRewardHead] = {}
        self._runs = 0
        rows, rounds = len(cfg.rows()), cfg.online_rounds
        # Stages: the offline tuning (unless its settings are given), the tuning seeds' worlds and
        # Oracles, a 3-cell start per method online, then per report seed its world, its Oracle and
        # every row offline and in rounds.
        tuning = (0 if cfg.tuned_from else self.tuning_stages) + len(cfg.tune_seeds) * (
            2 + 3 * len(cfg.methods) * rounds
        )
        self.progress = Progress(console, tuning + len(cfg.seeds) * (2 + rows * (1 + rounds)))

    # ------------------------------------------------------------------ one round

    def _round(self, world: SeedWorld, k: int, policy: Path, run: int) -> Condition:
        """Round ``k`` of one row: its policy samples the round's prompts, the Oracle scores the
        samples, best vs worst make the pairs; the training columns and the round's statistics."""
        cfg, w = self.cfg, self.words
        train = world.splits["train"]
        rng = np.random.default_rng([world.seed, _ROUND_PROMPTS, k])
        prompts = [train[int(i)] for i in rng.integers(len(train), size=cfg.online_prompts)]
        ids = [w.encode(p) for p in prompts]
        samples = sample(
            self._policy(policy),
            ids,
            w,
            temperature=cfg.online_temperature,
            n=cfg.online_samples,
            max_new_tokens=cfg.max_new_tokens,
            top_p=cfg.top_p,
            seed=world.seed * 1000 + _ROUND_SAMPLES + k,
        )
        true_all = np.array([[syn.true_reward(p, y) for y in ys] for p, ys in zip(prompts, samples)])
        if cfg.online_oracle == "true":
            scores = true_all
        else:
            flat = [w.encode(y, eos=True) for ys in samples for y in ys]
            rep = [i for i in ids for _ in range(cfg.online_samples)]
            scores = response_rewards(self._oracle[world.seed], rep, flat, pad_id=w.pad)
            scores = scores.reshape(len(prompts), cfg.online_samples)
        best, worst = best_vs_worst(scores)
        chosen = [samples[p][b] for p, b in enumerate(best)]
        rejected = [samples[p][b] for p, b in enumerate(worst)]
        cols: dict[str, Any] = {
            "prompt_ids": objects(ids),
            "chosen_ids": objects([w.encode(y, eos=True) for y in chosen]),
            "rejected_ids": objects([w.encode(y, eos=True) for y in rejected]),
            "oracle_chosen": scores[np.arange(len(prompts)), best],
            "oracle_rejected": scores[np.arange(len(prompts)), worst],
            "true_chosen": true_all[np.arange(len(prompts)), best],
            "true_rejected": true_all[np.arange(len(prompts)), worst],
        }
        # The DPO family's reference is the SFT model (the pipeline's `reference: sft`).
        ref = pair_scores(
            world.sft_model, ids, list(cols["chosen_ids"]), list(cols["rejected_ids"]), pad_id=w.pad
        )
        for red in ("sum", "mean"):
            cols[f"ref_zw_{red}"], cols[f"ref_zl_{red}"] = ref[f"zw_{red}"], ref[f"zl_{red}"]
        stats = round_stats(scores, true_all, cols, identical=[c == r for c, r in zip(chosen, rejected)])
        return Condition(f"online:{k}", world.root / f"online-{run}" / f"round{k}", cols, stats)

    def _policy(self, model_dir: Path) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_dir)

    def _rounds(
        self, world: SeedWorld, row: str, settings: dict[str, Any], split: str, *, label: str
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Every round of one row from SFT; the final policy's r* grid on ``split`` and each round's
        statistics (its policy's mean r* on ``split`` included)."""
        method, _, offset = self._settings(row)
        distills = self._distills(row)
        policy, per_round, self._runs = world.sft, [], self._runs + 1
        for k in range(self.cfg.online_rounds):
            with self.progress.stage(f"{label} round {k + 1}", "online"):
                cond = self._round(world, k, policy, self._runs)
                policy, metrics = self._train(
                    world, cond, method, settings, distills=distills, offset=offset, start=policy
                )
                rewards = self._sample_rewards(policy, world.splits[split], world.seed, split)
            per_round.append(
                {
                    **cond.stats,
                    "mean_true_reward": float(rewards.mean()),
                    **{f"train_{k}": v for k, v in metrics.items()},  # its last epoch's metrics
                }
            )
        return rewards, per_round

    # ------------------------------------------------------------------ worlds and tuning

    def _seed(self, seed: int) -> tuple[SeedWorld, Condition]:
        """The offline world of a seed, its deterministic pairs (condition ``0``) and its one Oracle,
        trained on them."""
        world = self._world(seed)
        cond = self._condition(world, "0")
        self._oracle[seed] = PolicyWithRewardHead.from_pretrained(cond.oracles["oracle"]).freeze()
        return world, cond

    def _offline_tuning(self) -> None:
        """Each method's offline-tuned settings: from ``tuned_from``, or this run's offline tuning."""
        cfg = self.cfg
        if cfg.tuned_from is None:
            self._tune()
            self.online.offline_tuning_source = "this run"
            return
        report = storage.read_json(cfg.tuned_from)
        tuned = report.get("tuned_hyperparameters", {})
        if missing := [m for m in cfg.methods if m not in tuned]:
            raise ValueError(f"{cfg.tuned_from} has no tuned settings for {missing}")
        self.tuned = {m: dict(tuned[m]) for m in cfg.methods}
        self.tuning = {m: report["tuning"]["methods"][m] for m in cfg.methods}
        self.online.offline_tuning_source = f"{Path(cfg.tuned_from).name} (seeds {report['tune_seeds']})"

    def _online_tuning(self) -> None:
        """The learning rate of every method, tuned again online (the same rule for every method)."""
        worlds = {s: self._seed(s)[0] for s in self.cfg.tune_seeds}
        for method in self.cfg.methods:
            axis = online_lr_axis(self.tuned[method]["lr"])
            result = tune(
                (axis,), self._online_scorer(method, axis, worlds), max_extensions=self.cfg.max_extensions
            )
            self.tuned_online[method] = {**self.tuned[method], **result.winner()}
            self.online.tuning[method] = result.as_dict()
            self.console.print(
                f"  tuned online {method}: {self.tuned_online[method]} ({len(result.cells())} cells)"
            )

    def _online_scorer(
        self, method: str, axis: Axis, worlds: dict[int, SeedWorld]
    ) -> Callable[[Cell], dict[int, float]]:
        """``score(cell)``: the method's rounds with its offline settings and the cell's learning rate,
        on every tuning seed; each seed's mean r* of the last policy on its validation prompts."""
        calls = [0]

        def score(cell: Cell) -> dict[int, float]:
            calls[0] += 1
            if calls[0] > len(axis.start):  # a cell the edge rule added: the progress total grows
                self.progress.total += len(worlds) * self.cfg.online_rounds
            settings = {**self.tuned[method], **cell}
            out = {}
            for s, world in worlds.items():
                label = f"tune online {method} lr={cell['lr']:g} ({s})"
                rewards, _ = self._rounds(world, method, settings, "validation", label=label)
                out[s] = float(rewards.mean())
            return out

        return score

    # ------------------------------------------------------------------ the protocol

    def run(self) -> dict[str, Any]:
        cfg, res = self.cfg, self.online
        started, cpu_started = time.perf_counter(), time.process_time()
        self.console.print(
            f"bench quality (online): report seeds {cfg.seeds}, tuning seeds {cfg.tune_seeds}; rows {cfg.rows()}; "
            f"{cfg.online_rounds} rounds of {cfg.online_prompts} prompts x {cfg.online_samples} samples; "
            f"work dir {self.work}"
        )
        self._offline_tuning()
        self._online_tuning()
        for seed in cfg.seeds:
            world, pairs = self._seed(seed)
            res.rewards.setdefault("sft", {})[seed] = self._sample_rewards(
                world.sft, world.splits["test"], seed, "test"
            )
            res.data.append(pairs.stats)
            for row in cfg.rows():
                self._report_row(world, pairs, row)
        reported = set(cfg.seeds)  # the tuning seeds' worlds recorded theirs too
        res.oracle_accuracy = {
            kind: {s: v for s, v in by_seed.items() if s in reported}
            for kind, by_seed in self.results.oracle_accuracy.get("0", {}).items()
        }
        res.random_init = {s: v for s, v in self.results.reference["random_init"].items() if s in reported}
        res.tuned, res.tuned_online, res.offline_tuning = self.tuned, self.tuned_online, self.tuning
        res.timings = {
            "wall_s": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu_started,
            **{f"{k}_s": v for k, v in self.progress.times.items()},
        }
        return build_online_report(res)

    def _report_row(self, world: SeedWorld, pairs: Condition, row: str) -> None:
        """One row on a report seed: offline on the deterministic pairs, then online in rounds."""
        res, seed = self.online, world.seed
        method, settings, offset = self._settings(row)
        with self.progress.stage(f"seed {seed} offline {row}", "train"):
            model_dir, _ = self._train(
                world, pairs, method, settings, distills=self._distills(row), offset=offset
            )
            res.rewards.setdefault(row, {})[seed] = self._sample_rewards(
                model_dir, world.splits["test"], seed, "test"
            )
        _, online_settings, _ = self._settings(row, self.tuned_online)
        rewards, rounds = self._rounds(
            world, row, online_settings, "test", label=f"seed {seed} {online_row(row)}"
        )
        res.rewards.setdefault(online_row(row), {})[seed] = rewards
        res.rounds.setdefault(online_row(row), {})[seed] = rounds


def round_stats(
    scores: np.ndarray, true_rewards: np.ndarray, cols: dict[str, Any], *, identical: list[bool]
) -> dict[str, float]:
    """What a round's samples and pairs were: mean Oracle and true reward of the samples (the
    policy's own, on train prompts), the chosen ones' r*, pairs whose two sides are the same
    response, and how often the Oracle's choice agrees with r* (of pairs whose r* differ)."""
    dc = cols["true_chosen"] - cols["true_rejected"]
    differ = dc != 0
    return {
        "pairs": float(len(dc)),
        "sample_oracle_reward": float(scores.mean()),
        "sample_true_reward": float(true_rewards.mean()),
        "chosen_true_reward": float(np.mean(cols["true_chosen"])),
        "identical_pair_share": float(np.mean(identical)),
        "true_tie_share": float(np.mean(~differ)),
        "oracle_agrees_with_true": float(np.mean(dc[differ] > 0)) if differ.any() else float("nan"),
    }
