"""The online rounds as pipeline steps (planning only: no Ray, no torch).

Round k (1..rounds), for each method m, from its round-k policy P(m, k-1) (P(m, 0): the SFT
model, else the base model; P(m, k): RUN/rounds/<k>/models/align-<m>):

    online:<k>:sample:<m>      generate: the round's prompt window, samples_per_prompt each
    online:<k>:pairs:<m>       the Oracle scores every sample; the pair rule picks the pairs,
                               prepared as a dataset (source `pairs`)
    online:<k>:score:<m>       score: the Oracle's rewards (+ the reference's log-probs for the DPO
                               family; e-DPO: its K Oracles)
    online:<k>:train:<m>       train align from P(m, k-1) on those pairs -> P(m, k)
    online:<k>:heldout:<m>     generate: P(m, k) on the held-out prompts
    online:<k>:winrate:<m>-vs-sft, <m>-vs-previous   Oracle win rates
    online:<k>:serve           roll the Serve app out to P(served method, k)
    online:<k>:record          RUN/rounds/<k>/round.json
    online:0:heldout:sft       the start policy's held-out samples, once

With ``overlap``, round k+1's samples come from P(m, k-1), the policy round k trains from: its
sample steps are planned before round k's training and run beside it (``background``), so the
round learns from data one round stale. Everything a step reads is another step's output, so a
rerun skips finished steps and resumes an interrupted round where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..artifacts import edpo_oracle_name
from ..config import GenerateConfig, PairsConfig, RolloutConfig, ScoreConfig, WinrateConfig
from ..pipeline_config import OnlineSection, PipelineConfig, needs_reference
from ..run_layout import ROUND_FILE, RunLayout
from .round_record import RoundRecordConfig, differences

SFT = "sft"
# The prompt-set folders of a round (RUN/rounds/<k>/samples/<it>/, eval/<it>/): the round's own
# prompts and the held-out ones, whichever datasets they come from.
ROUND_PROMPTS = "round"
HELDOUT = "heldout"
# The online section's keys each stage config takes as they are.
POOL_KEYS = ("batch_size", "num_actors", "num_gpus_per_actor", "dtype")
SAMPLING_KEYS = (*POOL_KEYS, "top_p", "max_new_tokens", "backend", "engine_kwargs", "seed")


class StepPlanner(Protocol):
    """What the pipeline's planner offers the rounds (drdo_ray.pipeline)."""

    cfg: PipelineConfig
    layout: RunLayout
    datasets: dict[str, str]
    models: dict[str, str]

    @property
    def start(self) -> str: ...

    def add(
        self, step_id: str, group: str, config: Any, action: Callable, out: str, done: str | None, **kw: Any
    ) -> None: ...

    def build(self, cls: type, where: str, fields: dict[str, Any], *, fixed: dict[str, Any]) -> Any: ...

    def run_fields(self, shared: Any, run: Any, loss: str) -> dict[str, Any]: ...

    def train_config(
        self, where: str, fields: dict[str, Any], fixed: dict[str, Any], defaults: dict[str, Any]
    ) -> Any: ...

    def add_train(self, group: str, step_id: str, tc: Any, *, key: str | None = None) -> None: ...


def policy_name(method: str) -> str:
    return f"align-{method}"


def round_tag(k: int) -> str:
    return f"round-{k}"


class Rounds:
    """The facts of each round: which policy samples, trains and is the reference, and which
    prompts it sees."""

    def __init__(self, section: OnlineSection, layout: RunLayout, start: str) -> None:
        self.section = section
        self.layout = layout
        self.start = start  # the SFT model, else the base model: "sft" in names and win rates
        self.losses = section.losses()

    def round(self, k: int) -> RunLayout:
        return self.layout.round(k)

    def policy(self, method: str, j: int) -> str:
        """P(m, j): the start policy for j = 0, else round j's trained policy."""
        return self.start if j == 0 else self.round(j).model(policy_name(method))

    def sampled_by(self, k: int) -> int:
        """The round whose policy sampled round k's prompts: k-1, or k-2 with overlap."""
        return k - 2 if self.section.overlap and k > 1 else k - 1

    def staleness(self, k: int) -> int:
        """Rounds between the policy that sampled round k's data and the one it trains."""
        return (k - 1) - self.sampled_by(k)

    def window(self, k: int) -> tuple[int | None, int]:
        """(offset, limit) of round k's prompts: the k-th window of the prompt source, after the
        held-out prompts when those come from the same dataset."""
        s = self.section
        skip = (s.heldout_prompts or 0) if s.heldout == s.prompts else 0
        offset = skip + (k - 1) * s.prompts_per_round
        return (offset or None), s.prompts_per_round

    def reference(self, method: str, k: int) -> str | None:
        """The reference a DPO-family method's pairs are scored with (None: the loss reads none)."""
        if not needs_reference(self.losses[method]):
            return None
        return self.policy(method, k - 1) if self.section.reference == "previous" else self.start

    def samples(self, method: str, k: int) -> str:
        """Round k's samples of ``method`` (RUN/rounds/<k>/samples/round/align-<m>)."""
        return self.round(k).samples(ROUND_PROMPTS, policy_name(method))

    def heldout_samples(self, method: str | None, k: int) -> str:
        """The held-out samples of round k's policy (None: the start policy, round 0)."""
        return self.round(k).samples(HELDOUT, SFT if method is None else policy_name(method))

    def winrate(self, method: str, k: int, which: str) -> str:
        return self.round(k).eval(HELDOUT, f"winrate-{policy_name(method)}-vs-{which}")

    def order(self) -> list[tuple[int, str]]:
        """(round, phase) in run order; phase ``sample`` moves one round earlier with overlap."""
        steps: list[tuple[int, str]] = []
        overlap = self.section.overlap
        for k in range(1, self.section.rounds + 1):
            if k == 1 or not overlap:
                steps.append((k, "sample"))
            steps.append((k, "prepare"))
            if overlap and k < self.section.rounds:
                steps.append((k + 1, "sample"))
            steps.append((k, "train"))
            steps.append((k, "evaluate"))
        return steps


def plan_rounds(planner: StepPlanner, actions: dict[str, Callable]) -> None:
    """Add every step of the pipeline's online rounds to ``planner``, in run order."""
    cfg = planner.cfg
    section = cfg.online
    assert section is not None
    rounds = Rounds(section, planner.layout, planner.start)
    given = section.model_dump(exclude_unset=True)
    if section.heldout is not None:
        _heldout(planner, actions, rounds, given, None, 0)
    for k, phase in rounds.order():
        for method in rounds.losses:
            if phase == "sample":
                _sample(planner, actions, rounds, given, method, k)
            elif phase == "prepare":
                _pairs(planner, actions, rounds, given, method, k)
            elif phase == "train":
                _train(planner, actions, rounds, given, method, k)
            elif section.heldout is not None:
                _heldout(planner, actions, rounds, given, method, k)
                _winrates(planner, actions, rounds, given, method, k)
        if phase == "train":
            _serve(planner, actions, rounds, k)
        if phase == "evaluate":
            _record(planner, actions, rounds, k)


def _pick(given: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: given[k] for k in keys if k in given}


def _sample(planner: StepPlanner, actions: dict, rounds: Rounds, given: dict, method: str, k: int) -> None:
    s = rounds.section
    assert s.prompts is not None
    offset, limit = rounds.window(k)
    out = rounds.samples(method, k)
    fields = _pick(given, SAMPLING_KEYS)
    fixed = {
        "model": rounds.policy(method, rounds.sampled_by(k)),
        "prompts": planner.datasets[s.prompts],
        "out": out,
        "temperatures": [s.temperature],
        "samples_per_prompt": s.samples_per_prompt,
        "offset": offset,
        "limit": limit,
    }
    gen = planner.build(GenerateConfig, "online", fields, fixed=fixed)
    planner.add(
        f"online:{k}:sample:{method}",
        "online",
        gen,
        actions["generate"],
        out,
        "generation.json",
        inputs=(gen.model, gen.prompts),
        background=s.overlap and k > 1,
    )


def _pairs(planner: StepPlanner, actions: dict, rounds: Rounds, given: dict, method: str, k: int) -> None:
    s = rounds.section
    assert s.prompts is not None
    layout = rounds.round(k)
    samples = rounds.samples(method, k)
    data = layout.data(f"pairs-{method}")
    fixed = {
        "samples": samples,
        "oracle": planner.models["oracle"],
        "tokenizer": rounds.start,
        "out": layout.pairs(method),
        "data": data,
        "tag": round_tag(k),
        "pair_rule": s.pair_rule,
        "margin": s.margin,
    }
    pc = planner.build(PairsConfig, "online", _pick(given, POOL_KEYS), fixed=fixed)
    planner.add(
        f"online:{k}:pairs:{method}",
        "online",
        pc,
        actions["pairs"],
        data,
        "stats.json",
        inputs=(samples, pc.oracle),
        clean=(pc.out, data),
    )


def _train(planner: StepPlanner, actions: dict, rounds: Rounds, given: dict, method: str, k: int) -> None:
    """The round's score step (it takes the training config's log-prob reduction), then its
    training: the pipeline's train section < online.train < the method's own settings."""
    s = rounds.section
    layout = rounds.round(k)
    loss = rounds.losses[method]
    scored = layout.scored(f"pairs-{method}")
    tc = planner.train_config(
        f"online.methods.{method}",
        planner.run_fields(s.train, (s.methods or {}).get(method), loss),
        {
            "stage": "align",
            "name": policy_name(method),
            "data": scored,
            "model": rounds.policy(method, k - 1),
            "run_dir": layout.root,
        },
        {"loss": method},
    )
    edpo = [planner.models[edpo_oracle_name("oracle", j)] for j in range(planner.cfg.edpo_oracles)]
    fixed = {
        "data": layout.data(f"pairs-{method}"),
        "out": scored,
        "oracles": edpo if loss == "edpo" else [planner.models["oracle"]],
        "reference": rounds.reference(method, k),
        "reduction": tc.loss_settings.log_prob_reduction,
    }
    sc = planner.build(ScoreConfig, "online", _pick(given, POOL_KEYS), fixed=fixed)
    inputs = (sc.data, *sc.oracles, *([sc.reference] if sc.reference else []))
    planner.add(
        f"online:{k}:score:{method}", "online", sc, actions["score"], scored, "scoring.json", inputs=inputs
    )
    planner.add_train("online", f"online:{k}:train:{method}", tc, key=f"rounds/{k}/{policy_name(method)}")


def _heldout(
    planner: StepPlanner, actions: dict, rounds: Rounds, given: dict, method: str | None, k: int
) -> None:
    s = rounds.section
    assert s.heldout is not None
    out = rounds.heldout_samples(method, k)
    fields = _pick(given, SAMPLING_KEYS)
    fixed = {
        "model": rounds.start if method is None else rounds.policy(method, k),
        "prompts": planner.datasets[s.heldout],
        "out": out,
        "temperatures": s.heldout_temperatures or [s.temperature],
        "samples_per_prompt": 1,
        "limit": s.heldout_prompts,
    }
    gen = planner.build(GenerateConfig, "online", fields, fixed=fixed)
    step = f"online:{k}:heldout:{method or SFT}"
    planner.add(
        step, "online", gen, actions["generate"], out, "generation.json", inputs=(gen.model, gen.prompts)
    )


def _winrates(planner: StepPlanner, actions: dict, rounds: Rounds, given: dict, method: str, k: int) -> None:
    s = rounds.section
    assert s.heldout is not None
    a = rounds.heldout_samples(method, k)
    against = [("sft", rounds.heldout_samples(None, 0), SFT)]
    if k > 1:
        against.append(("previous", rounds.heldout_samples(method, k - 1), f"{method} {round_tag(k - 1)}"))
    for which, b, b_name in against:
        out = rounds.winrate(method, k, which)
        fixed = {
            "a": a,
            "b": b,
            "oracle": planner.models["oracle"],
            "out": out,
            "a_name": f"{method} {round_tag(k)}",
            "b_name": b_name,
        }
        wc = planner.build(WinrateConfig, "online", _pick(given, POOL_KEYS), fixed=fixed)
        planner.add(
            f"online:{k}:winrate:{method}-vs-{which}",
            "online",
            wc,
            actions["winrate"],
            out,
            "winrate.json",
            inputs=(a, b, wc.oracle),
        )


def _serve(planner: StepPlanner, actions: dict, rounds: Rounds, k: int) -> None:
    s = rounds.section
    method = s.served_method()
    if s.serve is None or method is None:
        return
    settings = s.serve.model_dump(exclude_unset=True, exclude={"method"})
    model = rounds.policy(method, k)
    out = rounds.round(k).path("serve")
    fixed = {"model": model, "revision": round_tag(k), "out": out}
    sc = planner.build(RolloutConfig, "online.serve", settings, fixed=fixed)
    planner.add(f"online:{k}:serve", "online", sc, actions["serve"], out, "serve.json", inputs=(model,))


def _record(planner: StepPlanner, actions: dict, rounds: Rounds, k: int) -> None:
    s = rounds.section
    layout = rounds.round(k)
    methods: dict[str, Any] = {}
    inputs: list[str] = []
    for method, loss in rounds.losses.items():
        j = rounds.sampled_by(k)
        winrates = {}
        if s.heldout is not None:
            winrates = {
                which: rounds.winrate(method, k, which)
                for which in (("sft", "previous") if k > 1 else ("sft",))
            }
        methods[method] = {
            "loss": loss,
            "start": rounds.policy(method, k - 1),
            "sampled_by": rounds.policy(method, j),
            "sampled_round": j,
            "staleness": rounds.staleness(k),
            "reference": rounds.reference(method, k),
            "samples": rounds.samples(method, k),
            "pairs": layout.pairs(method),
            "scored": layout.scored(f"pairs-{method}"),
            "model": layout.model(policy_name(method)),
            "winrates": winrates,
        }
        inputs += [methods[method]["model"], methods[method]["scored"], *winrates.values()]
    offset, limit = rounds.window(k)
    prompts = str(s.prompts)
    rc = RoundRecordConfig(
        round=k,
        tag=round_tag(k),
        out=layout.round_record,
        oracle=planner.models["oracle"],
        prompts={
            "dataset": prompts,
            "path": planner.datasets[prompts],
            "offset": offset or 0,
            "limit": limit,
        },
        methods=methods,
        settings=s.model_dump(mode="json", exclude={"serve", "methods", "train"}),
    )
    step = f"online:{k}:record"
    planner.add(
        step,
        "online",
        rc,
        actions["record"],
        layout.root,
        ROUND_FILE,
        inputs=tuple(inputs),
        differences=lambda: differences(rc),
    )
