"""`drdo-ray pipeline --config configs/X.yaml` and jobs/pipeline.py: every stage of one
experiment, in order, under one run directory (local, or ``s3://...`` so that every node of a
cluster reads and writes the same artifacts).

    model -> prepare -> sft -> oracle (+ edpo_oracles) -> score -> align -> generate -> winrate
          -> judge -> kl -> online rounds (drdo_ray/online/rounds.py) -> report

The config (:class:`~drdo_ray.config.PipelineConfig`) names datasets and policies; :func:`plan`
turns it into concrete stage configs -- the same classes the single-stage commands validate --
with every path derived from the run directory (:class:`~drdo_ray.run_layout.RunLayout`).

A stage whose outputs exist is skipped, so rerunning the same command resumes a failed run (a
training stage cut short resumes from its last checkpoint). ``force`` reruns the selected stages,
and a stage reruns whenever a stage it reads from ran in the same invocation (its outputs would be
stale otherwise). A ``background`` step (the online rounds' overlap) runs beside the steps after
it until one needs it."""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from . import storage
from .artifacts import edpo_oracle_name
from .config import (
    OWNED_FIELDS,
    GenerateConfig,
    JudgeConfig,
    KLConfig,
    PrepareConfig,
    ReportConfig,
    ScoreConfig,
    StageConfig,
    TinyModelConfig,
    TrainConfig,
    WinrateConfig,
    describe_errors,
    edpo_oracle_settings,
    owned_fields,
)
from .errors import UserError
from .pipeline_config import PIPELINE_STAGES, PipelineConfig
from .run_layout import RunLayout


@dataclass
class Step:
    """One unit of work: a validated stage config and the function that runs it."""

    id: str  # "align:drdo"; --stages takes an id or a group
    group: str  # one of PIPELINE_STAGES
    config: StageConfig
    action: Callable[[Any, Console], Any]
    output: str  # the folder the step writes
    marker: str | None  # exists once the step finished; None: always runs (the report)
    inputs: tuple[str, ...] = ()  # what it reads; steps producing these are its `needs`
    needs: list[str] = field(default_factory=list)
    clean: tuple[str, ...] = ()  # removed before a forced rerun (a training run would resume otherwise)
    skip_reason: Callable[[], str | None] | None = None
    background: bool = False  # runs beside the steps after it; a step that needs it waits for it
    # What a finished step's outputs were made from that differs from the plan (a rerun refuses
    # them unless forced); None: the outputs' presence is enough.
    differences: Callable[[], list[str]] | None = None


# ------------------------------------------------------------------------------ actions
# Imports stay inside: planning a pipeline (and validating its config) needs neither Ray nor torch.


def _build_tiny(cfg: TinyModelConfig, console: Console) -> None:
    from .models import build_tiny_model

    local = cfg.out if storage.is_local(cfg.out) else tempfile.mkdtemp(prefix="drdo-tiny-")
    build_tiny_model(
        local,
        seed=cfg.seed,
        arch=cfg.arch,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        vocab_size=cfg.vocab_size,
    )
    if local != cfg.out:
        storage.upload_dir(local, cfg.out)


def _lazy(target: str) -> Callable[[Any, Console], Any]:
    """``module:function`` (relative to this package), imported on the first call, so planning a
    pipeline (``--dry-run``, validation) loads no Ray, torch or transformers module."""

    def call(cfg: Any, console: Console) -> Any:
        module, name = target.split(":")
        return getattr(importlib.import_module(module, __package__), name)(cfg, console)

    return call


_prepare = _lazy(".data.prepare:prepare")
_train = _lazy(".train.ray_trainer:fit")
_score = _lazy(".scoring:score")
_generate = _lazy(".generation.sampling:generate_samples")
_winrate = _lazy(".eval.winrate:run_winrate")
_judge = _lazy(".eval.judge:run_judge")
_kl = _lazy(".eval.kl:run_kl")
# The online rounds' steps (drdo_ray/online/rounds.py) are these stages, plus their own three.
ROUND_ACTIONS = {
    "generate": _generate,
    "score": _score,
    "winrate": _winrate,
    "pairs": _lazy(".online.pair_stage:build_round_pairs"),
    "serve": _lazy(".serve.rollout:roll_out"),
    "record": _lazy(".online.round_record:write_round_record"),
}


def _report(cfg: ReportConfig, console: Console) -> Any:
    from .eval.report import build_report

    result = build_report(cfg)
    console.print(f"report: [bold]{result['report']}[/]")
    return result


# ------------------------------------------------------------------------------ planning


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested sections merged (so a stage can set deepspeed.zero_stage
    without repeating deepspeed.enabled from the shared `train` section)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _given(section: BaseModel | None) -> dict[str, Any]:
    """The keys a (validated) section sets: a stage config is built from defaults < these < what
    the pipeline derives, so the section's own defaults must not hide the shared ``train`` keys."""
    return section.model_dump(exclude_unset=True) if section is not None else {}


def _pop(section: BaseModel | None, keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a section into the pipeline's own keys and the stage config's fields."""
    fields = _given(section)
    return {k: fields.pop(k) for k in keys if k in fields}, fields


def _theirs(shared: dict[str, Any], stage: str, loss: str | None) -> dict[str, Any]:
    """The keys of a section shared by several stages or losses (`train`, `align`) that this one
    reads: another stage's or loss's setting is left to its owner (the config checked that each
    belongs to something the pipeline trains)."""
    own = owned_fields(stage, loss)
    return {k: v for k, v in shared.items() if k not in OWNED_FIELDS or k in own}


def _build(
    cls: type[StageConfig],
    where: str,
    fields: dict[str, Any],
    *,
    fixed: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> Any:
    """``cls`` from defaults < the section's fields < what the pipeline derives from run_dir. The
    sections refuse the derived keys and the config checked every name, so what fails here is a
    stage config its merged fields make invalid (an unknown loss as a run name, a cross-field rule)."""
    try:
        return cls.model_validate({**(defaults or {}), **fields, **fixed})
    except ValidationError as err:
        raise UserError(f"pipeline.{where}: invalid {cls.__name__}: {describe_errors(err)}") from None


class _Planner:
    """Builds the steps of one PipelineConfig group by group, in run order. The config has checked
    every name (datasets, policies, prompt sets) and resolved the sections' defaults; each group
    reads the folders the earlier ones recorded, by name."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.layout = RunLayout(cfg.run_dir)
        self.steps: list[Step] = []
        self.base = cfg.base_model or ""
        self.datasets: dict[str, str] = {}  # dataset name -> prepared folder
        self.models: dict[str, str] = {}  # run name -> exported model folder
        self.scored: dict[str, str] = {}  # "one" / "edpo" -> scored dataset folder
        self.samples: dict[tuple[str, str], str] = {}  # (prompt set, policy) -> generation folder

    def add(
        self,
        step_id: str,
        group: str,
        config: StageConfig,
        action: Callable,
        out: str,
        done: str | None,
        **kw: Any,
    ) -> None:
        """A step writing ``out``, finished once ``out/done`` exists (None: it always runs)."""
        marker = storage.join(out, done) if done else None
        self.steps.append(Step(step_id, group, config, action, out, marker, **kw))

    # ------------------------------------------------------------------ groups, in run order

    def model(self) -> None:
        if self.cfg.tiny_model is None:
            return
        out = self.layout.tiny_model
        tiny = _build(TinyModelConfig, "tiny_model", _given(self.cfg.tiny_model), fixed={"out": out})
        self.add("model", "model", tiny, _build_tiny, out, "config.json")
        self.base = self.base or out

    def prepare(self) -> None:
        for name, fields in self.cfg.datasets.items():
            out = self.layout.data(name)
            prep = _build(
                PrepareConfig,
                f"datasets.{name}",
                _given(fields),
                fixed={"out": out},
                defaults={"tokenizer": self.base},
            )
            inputs = (prep.tokenizer,) if prep.tokenizer else ()
            self.add(f"prepare:{name}", "prepare", prep, _prepare, out, "stats.json", inputs=inputs)
            self.datasets[name] = out

    def build(
        self, cls: type[StageConfig], where: str, fields: dict[str, Any], *, fixed: dict[str, Any]
    ) -> Any:
        return _build(cls, where, fields, fixed=fixed)

    def run_fields(self, shared: BaseModel | None, run: BaseModel | None, loss: str) -> dict[str, Any]:
        """An alignment run's keys: those of ``shared`` (the align or online.train section) its
        loss reads < the run's own."""
        return _merge(_theirs(_given(shared), "align", loss), _given(run))

    def train_config(
        self, where: str, fields: dict[str, Any], fixed: dict[str, Any], defaults: dict[str, Any]
    ) -> TrainConfig:
        """A training run's config: the `train` section's keys this stage or loss reads < ``fields``
        (run_dir: the pipeline's unless ``fixed`` gives one)."""
        shared = _theirs(_given(self.cfg.train), fixed["stage"], fields.get("loss") or defaults.get("loss"))
        return _build(
            TrainConfig,
            where,
            _merge(shared, fields),
            fixed={"run_dir": self.layout.root, **fixed},
            defaults=defaults,
        )

    def add_train(self, group: str, step_id: str, tc: TrainConfig, *, key: str | None = None) -> None:
        """The step training ``tc``; its model is ``models[key or its name]``."""
        layout = RunLayout(tc.run_dir)
        out = layout.model(str(tc.name))
        self.add(
            step_id,
            group,
            tc,
            _train,
            out,
            "config.json",
            inputs=(tc.model, tc.data, *([tc.live_reference] if tc.live_reference else [])),
            clean=(out, layout.train(str(tc.name))),
        )
        self.models[key or str(tc.name)] = out

    def _train(
        self,
        group: str,
        step_id: str,
        where: str,
        fields: dict[str, Any],
        fixed: dict[str, Any],
        defaults: dict[str, Any],
    ) -> None:
        self.add_train(group, step_id, self.train_config(where, fields, fixed, defaults))

    def _dataset(self, section: BaseModel) -> tuple[str, dict[str, Any]]:
        """(the prepared folder of the dataset named by ``data``, the section's other fields)."""
        own, fields = _pop(section, ["data"])
        return self.datasets[own["data"]], fields

    def sft(self) -> None:
        if self.cfg.sft is None:
            return
        data, fields = self._dataset(self.cfg.sft)
        fixed = {"stage": "sft", "name": "sft", "data": data}
        self._train("sft", "sft", "sft", fields, fixed, {"model": self.base})

    @property
    def start(self) -> str:
        """Where the Oracles and the policies start: the SFT model, else the base model."""
        return self.models.get("sft", self.base)

    def oracles(self) -> None:
        if self.cfg.oracle is None:
            return
        data, fields = self._dataset(self.cfg.oracle)
        fixed = {"stage": "oracle", "data": data}
        start = {"model": self.start}
        self._train("oracle", "oracle", "oracle", fields, fixed | {"name": "oracle"}, start)
        # e-DPO: plain Bradley-Terry Oracles (Eq. 2 = Eq. 4 with oracle_alpha 0) that differ only in
        # their reward head's seed. These two keys override the section's (its oracle_alpha and
        # head_seed are the main Oracle's); the name is the pipeline's, as for every run.
        for k in range(self.cfg.edpo_oracles):
            self._train(
                "edpo_oracles",
                f"edpo_oracles:{k}",
                "oracle (e-DPO Oracle)",
                fields | edpo_oracle_settings(k),
                fixed | {"name": edpo_oracle_name("oracle", k)},
                start,
            )

    def score(self) -> None:
        if self.cfg.score is None:
            return
        data, fields = self._dataset(self.cfg.score)
        name = self.cfg.score.data
        members = [self.models[edpo_oracle_name("oracle", k)] for k in range(self.cfg.edpo_oracles)]
        for kind, suffix, oracles in (("one", "", [self.models["oracle"]]), ("edpo", "_edpo", members)):
            if not oracles:
                continue
            out = self.layout.scored(f"{name}{suffix}")
            fixed = {"data": data, "out": out, "oracles": oracles, "reference": self.models.get("sft")}
            sc = _build(ScoreConfig, "score", fields, fixed=fixed)
            inputs = (sc.data, *sc.oracles, *([sc.reference] if sc.reference else []))
            self.add(f"score:{name}{suffix}", "score", sc, _score, out, "scoring.json", inputs=inputs)
            self.scored[kind] = out

    def align(self) -> None:
        if self.cfg.align is None:
            return
        own, shared = _pop(self.cfg.align, ["runs"])
        for run_name, loss in self.cfg.align_losses().items():
            overrides = own["runs"][run_name] or {}  # the run's keys (dumped with the section)
            self._train(
                "align",
                f"align:{run_name}",
                f"align.runs.{run_name}",
                _merge(_theirs(shared, "align", loss), overrides),
                {
                    "stage": "align",
                    "name": f"align-{run_name}",
                    "data": self.scored["edpo" if loss == "edpo" else "one"],
                },
                {"model": self.start, "loss": run_name},
            )

    def generate(self) -> None:
        if self.cfg.generate is None:
            return
        _, fields = _pop(self.cfg.generate, ["prompts", "policies"])
        for prompts in self.cfg.prompt_sets():
            for policy in self.cfg.generated_policies():
                out = self.layout.samples(prompts, policy)
                fixed = {"model": self.models[policy], "prompts": self.datasets[prompts], "out": out}
                gen = _build(GenerateConfig, "generate", fields, fixed=fixed)
                self.add(
                    f"generate:{prompts}:{policy}",
                    "generate",
                    gen,
                    _generate,
                    out,
                    "generation.json",
                    inputs=(gen.model, gen.prompts),
                )
                self.samples[(prompts, policy)] = out

    def compare(self, kind: Literal["winrate", "judge"]) -> None:
        """The win-rate or judge section: one step per (prompt set, A, B). Both compare sample
        sets A and B (B may be the prompts' reference responses); the win rate scores them with
        the Oracle, the judge asks an LLM (and is skipped while no key or endpoint is given)."""
        section = getattr(self.cfg, kind)
        if section is None:
            return
        oracle = self.models.get("oracle")
        cls, action = (WinrateConfig, _winrate) if kind == "winrate" else (JudgeConfig, _judge)
        _, fields = _pop(section, ["a", "against", "prompts"])
        a, against, prompt_sets = self.cfg.comparison(kind)
        for prompts in prompt_sets:
            for b in against:
                out = self.layout.eval(prompts, f"{kind}-{a}-vs-{b}")
                fixed = {
                    "a": self.samples[(prompts, a)],
                    "b": self.samples[(prompts, b)] if b != "reference" else "reference",
                    "out": out,
                } | ({"oracle": oracle} if kind == "winrate" else {})
                config = _build(cls, kind, fields, fixed=fixed)
                self.add(
                    f"{kind}:{prompts}:{a}-vs-{b}",
                    kind,
                    config,
                    action,
                    out,
                    f"{kind}.json",
                    inputs=(config.a, config.b, *([oracle] if kind == "winrate" else [])),
                    skip_reason=_judge_unavailable(config) if kind == "judge" else None,
                )

    def kl(self) -> None:
        if self.cfg.kl is None:
            return
        _, fields = _pop(self.cfg.kl, ["policies", "prompts"])
        policies, prompts = self.cfg.kl_targets()
        for policy in policies:
            out = self.layout.eval(str(prompts), f"kl-{policy}")
            fixed = {
                "policy": self.models[policy],
                "reference": self.models["sft"],
                "samples": self.samples[(str(prompts), policy)],
                "out": out,
            }
            kc = _build(KLConfig, "kl", fields, fixed=fixed, defaults={"label": policy})
            self.add(
                f"kl:{prompts}:{policy}",
                "kl",
                kc,
                _kl,
                out,
                "kl.json",
                inputs=(kc.policy, kc.reference, kc.samples),
            )

    def online(self) -> None:
        if self.cfg.online is None:
            return
        from .online.rounds import plan_rounds

        plan_rounds(self, ROUND_ACTIONS)

    def report(self) -> None:
        if self.cfg.report is None:
            return
        rc = _build(
            ReportConfig,
            "report",
            _given(self.cfg.report),
            fixed={"run": self.layout.root},
            defaults={"title": self.cfg.title},
        )
        self.add("report", "report", rc, _report, rc.out or self.layout.report, None)

    def link(self) -> list[Step]:
        """Each step needs the steps whose outputs it reads."""
        owners = {s.output: s.id for s in self.steps}
        order = [s.id for s in self.steps]
        for s in self.steps:
            s.needs = sorted(
                {owners[i] for i in s.inputs if i in owners and owners[i] != s.id}, key=order.index
            )
        return self.steps


def plan(cfg: PipelineConfig) -> list[Step]:
    """Every step of ``cfg`` in run order, each with its validated stage config. Key and type errors
    and dangling dataset/policy names were raised when ``cfg`` was validated; this raises UserError
    naming the section for a stage config its merged fields make invalid (a loss name, a
    cross-field rule): nothing runs first."""
    p = _Planner(cfg)
    p.model()
    p.prepare()
    p.sft()
    p.oracles()
    p.score()
    p.align()
    p.generate()
    p.compare("winrate")
    p.compare("judge")
    p.kl()
    p.online()
    p.report()
    return p.link()


def _judge_unavailable(cfg: JudgeConfig) -> Callable[[], str | None]:
    def reason() -> str | None:
        if cfg.base_url or os.environ.get(cfg.api_key_env):
            return None
        return f"set {cfg.api_key_env} (in the job's runtime_env env_vars on a cluster) or judge.base_url"

    return reason


def select(steps: list[Step], stages: Sequence[str] | None) -> list[Step]:
    """The steps named by ``stages`` (groups such as ``align``, or ids such as ``align:drdo``), in
    run order; all of them when ``stages`` is empty."""
    if not stages:
        return list(steps)
    ids = {s.id for s in steps}
    unknown = [name for name in stages if name not in ids and name not in PIPELINE_STAGES]
    if unknown:
        raise UserError(
            f"unknown stage {', '.join(unknown)}: use a stage ({', '.join(PIPELINE_STAGES)}) "
            f"or a step id ({', '.join(s.id for s in steps[:4])}, ...; see --dry-run)"
        )
    wanted = set(stages)
    return [s for s in steps if s.id in wanted or s.group in wanted]


# ------------------------------------------------------------------------------ running


def _exists(uri: str) -> bool:
    try:
        return storage.exists(uri)
    except ImportError as err:  # fsspec names the missing package (s3fs, gcsfs): one line, not a traceback
        raise UserError(f"cannot reach {uri}: {err} (pip install 'drdo-ray[s3]' for s3://)") from None
    except Exception as err:  # no credentials, access denied, no such bucket: the store's own words
        if storage.is_local(uri):
            raise
        raise UserError(
            f"cannot reach {uri}: {type(err).__name__}: {err} (credentials come from the environment: "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance profile; AWS_ENDPOINT_URL for an "
            "S3-compatible store)"
        ) from None


def _redacted(value: Any) -> Any:
    """The config for pipeline.json, without any api_key a section may carry."""
    if isinstance(value, dict):
        return {k: "<redacted>" if k == "api_key" and v else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _write_status(layout: RunLayout, status: dict[str, Any]) -> None:
    status["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    storage.makedirs(layout.root)
    storage.write_json(layout.pipeline_status, status)


def _print_plan(
    console: Console, run: str, chosen: list[Step], done: dict[str, bool], blocked: dict, force: bool
) -> None:
    """--dry-run: each chosen step, whether it would run, be skipped or wait for another."""
    table = Table(title=f"pipeline plan: {run}")
    for column in ("#", "stage", "state", "output (under run_dir)"):
        table.add_column(column, overflow="fold")
    for i, s in enumerate(chosen, 1):
        state = "done (skip)" if done[s.id] and not force else "run"
        if blocked[s.id]:
            state = f"blocked: needs {', '.join(blocked[s.id])}"
        table.add_row(str(i), s.id, state, s.output.removeprefix(run + "/"))
    console.print(table)


def _run_step(
    s: Step, label: str, stale: list[str], rerun: bool, record: dict[str, Any], console: Console
) -> float:
    """Run one step (``rerun``: start over, removing what it left); its status goes in ``record``
    (the caller writes pipeline.json); returns its seconds. A failure is recorded and raised."""
    console.rule(f"[bold]{label}[/] {'(rerun: ' + ', '.join(stale) + ' changed)' if stale else ''}")
    config = s.config
    if rerun:  # forced or stale: start over instead of reusing / resuming what is there
        for target in s.clean:
            storage.remove(target)
        if "force" in type(config).model_fields:
            config = config.model_copy(update={"force": True})
    started = time.perf_counter()
    try:
        s.action(config, console)
    except BaseException as err:
        record.update(
            status="failed",
            error=str(err).splitlines()[0][:500] if str(err) else type(err).__name__,
            elapsed_s=round(time.perf_counter() - started, 1),
        )
        console.print(
            f"[red]failed[/] {label} after {time.perf_counter() - started:.1f}s; rerun the same command "
            "to resume (finished stages are skipped, training resumes from its last checkpoint)"
        )
        raise
    elapsed = time.perf_counter() - started
    record.update(status="done", elapsed_s=round(elapsed, 1))
    return elapsed


def _print_summary(
    console: Console, run: str, total: float, chosen: list[Step], record: dict[str, Any]
) -> None:
    table = Table(title=f"pipeline {run} ({total:.0f}s)")
    for column in ("stage", "status", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for s in chosen:
        entry = record.get(s.id, {})
        seconds = entry.get("elapsed_s") if entry.get("status") == "done" else None
        table.add_row(s.id, str(entry.get("status", "-")), f"{seconds:.1f}" if seconds is not None else "-")
    console.print(table)


class _Runner:
    """Runs steps one after the other, except a ``background`` step: it runs in a thread beside
    the steps after it (the online rounds' overlap), and a step that needs it waits for it. The
    status file is written under a lock."""

    def __init__(self, layout: RunLayout, status: dict[str, Any], console: Console, total: int, t0: float):
        self.layout, self.status, self.console = layout, status, console
        self.total, self.t0 = total, t0
        self.lock = threading.Lock()
        self.ran: set[str] = set()
        self.background: dict[str, Future[None]] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-background")

    def write(self) -> None:
        with self.lock:
            _write_status(self.layout, self.status)

    def wait_for(self, ids: Sequence[str]) -> None:
        """Block until the background steps among ``ids`` finish; a failure is raised here."""
        for step_id in ids:
            future = self.background.pop(step_id, None)
            if future is not None:
                future.result()

    def start(
        self, s: Step, i: int, label: str, stale: list[str], rerun: bool, entry: dict[str, Any]
    ) -> None:
        if not s.background:
            self._execute(s, i, label, stale, rerun, entry)
            return
        self.console.print(f"[cyan]start[/] {label} beside the next steps")
        self.background[s.id] = self.pool.submit(self._execute, s, i, label, stale, rerun, entry)

    def _execute(
        self, s: Step, i: int, label: str, stale: list[str], rerun: bool, entry: dict[str, Any]
    ) -> None:
        try:
            elapsed = _run_step(s, label, stale, rerun, entry, self.console)
        finally:
            self.write()
        with self.lock:
            self.ran.add(s.id)
        self.console.print(
            f"[green]done[/]  {label} in {elapsed:.1f}s "
            f"(pipeline {time.perf_counter() - self.t0:.0f}s, {self.total - i} stages left)"
        )

    def close(self) -> None:
        """On success nothing is left running; after a failure, a background step is left to finish
        (a Ray job cannot be interrupted halfway) but nothing new starts."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    stages: Sequence[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the selected steps of ``cfg`` in order; returns {run_dir, stages: {id: {status, elapsed_s,
    output}}, elapsed_s}. ``dry_run`` prints the plan (done / to run) and runs nothing."""
    console = console or Console(stderr=True)
    steps = plan(cfg)
    chosen = select(steps, stages)
    chosen_ids = {s.id for s in chosen}
    done = {s.id: s.marker is not None and _exists(s.marker) for s in steps}
    blocked = {s.id: [n for n in s.needs if n not in chosen_ids and not done[n]] for s in chosen}
    for s in chosen:
        if blocked[s.id] and not dry_run:
            raise UserError(
                f"stage {s.id} reads the outputs of {', '.join(blocked[s.id])}, which have not finished "
                f"under {cfg.run_dir}: add them to --stages (or run without --stages)"
            )
        diffs = s.differences() if s.differences and done[s.id] and not force else []
        if diffs:
            raise UserError(
                f"stage {s.id}: {s.output} was made with {'; '.join(diffs)}; pass --force "
                f"(--stages {s.group} --force) to redo it, or choose another run_dir"
            )
    layout = RunLayout(cfg.run_dir)
    run = layout.root
    if dry_run:
        _print_plan(console, run, chosen, done, blocked, force)
        return {"run_dir": run, "stages": {s.id: {"status": "planned", "done": done[s.id]} for s in chosen}}

    status: dict[str, Any] = (
        storage.read_json(layout.pipeline_status) if _exists(layout.pipeline_status) else {}
    )
    # The config as given: a typed section's defaults would misstate what train < stage layering chose.
    given = cfg.model_dump(mode="json", exclude_unset=True)
    status.update(title=cfg.title, run_dir=run, config=_redacted(given))
    record: dict[str, Any] = status.setdefault("stages", {})
    console.print(f"[bold]pipeline[/] {cfg.title or ''} -> {run}: {len(chosen)} of {len(steps)} stages")
    started_all = time.perf_counter()
    runner = _Runner(layout, status, console, len(chosen), started_all)
    try:
        for i, s in enumerate(chosen, 1):
            label = f"[{i}/{len(chosen)}] {s.id}"
            runner.wait_for(s.needs)
            stale = [n for n in s.needs if n in runner.ran]
            if done[s.id] and not force and not stale:
                console.print(f"[dim]skip[/]  {label} (outputs exist: {s.output})")
                record[s.id] = {"status": "skipped: outputs exist", "output": s.output}
                continue
            reason = s.skip_reason() if s.skip_reason else None
            if reason:
                console.print(f"[yellow]skip[/]  {label}: {reason}")
                record[s.id] = {"status": f"skipped: {reason}", "output": s.output}
                runner.write()
                continue
            record[s.id] = {
                "status": "running",
                "output": s.output,
                "started": datetime.now(timezone.utc).isoformat(),
            }
            runner.write()
            runner.start(s, i, label, stale, done[s.id], record[s.id])
        runner.wait_for(list(runner.background))
    finally:
        runner.close()
    total = time.perf_counter() - started_all
    _print_summary(console, run, total, chosen, record)
    return {
        "run_dir": run,
        "stages": {s.id: record.get(s.id, {}) for s in chosen},
        "elapsed_s": round(total, 1),
    }
