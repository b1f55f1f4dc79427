"""`drdo-ray pipeline --config configs/X.yaml` and jobs/pipeline.py: every stage of one
experiment, in order, under one run directory (local, or ``s3://...`` so that every node of a
cluster reads and writes the same artifacts).

    model -> prepare -> sft -> oracle (+ e-DPO ensemble) -> score -> align -> generate -> winrate
          -> judge -> kl -> report

The config (:class:`~drdo_ray.config.PipelineConfig`) names datasets and policies; :func:`plan`
turns it into concrete stage configs -- the same classes the single-stage commands validate --
with every path derived from the run directory:

    RUN/models/tiny/                          tiny_model (offline runs)
    RUN/data/<dataset>/                       prepare
    RUN/train/<run>/, RUN/models/<run>/       sft, oracle, oracle-ens-<k>, align-<name>
    RUN/scored/<dataset>[_ensemble]/          score (one Oracle; the e-DPO ensemble)
    RUN/samples/<prompts>/<policy>/           generate
    RUN/eval/<prompts>/<kind>-<a>-vs-<b>/     winrate, judge (kl-<policy>/ for kl)
    RUN/report/                               report
    RUN/pipeline.json                         each stage's status and seconds

A stage whose outputs exist is skipped, so rerunning the same command resumes a failed run (a
training stage cut short resumes from its last checkpoint). ``force`` reruns the selected stages,
and a stage reruns whenever a stage it reads from ran in the same invocation (its outputs would be
stale otherwise)."""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from . import storage
from .config import (
    PIPELINE_STAGES,
    GenerateConfig,
    JudgeConfig,
    KLConfig,
    PipelineConfig,
    PrepareConfig,
    ReportConfig,
    ScoreConfig,
    StageConfig,
    TinyModelConfig,
    TrainConfig,
    WinrateConfig,
)
from .errors import UserError

STATUS_FILE = "pipeline.json"


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
_generate = _lazy(".eval.sampling:generate_samples")
_winrate = _lazy(".eval.winrate:run_winrate")
_judge = _lazy(".eval.judge:run_judge")
_kl = _lazy(".eval.kl:run_kl")


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


def _pop(section: dict[str, Any] | None, keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a section into the pipeline's own keys and the stage config's fields."""
    fields = dict(section or {})
    return {k: fields.pop(k) for k in keys if k in fields}, fields


def _build(
    cls: type[StageConfig],
    where: str,
    fields: dict[str, Any],
    *,
    fixed: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> Any:
    """``cls`` from defaults < the section's fields < what the pipeline derives from run_dir."""
    clash = sorted(set(fields) & set(fixed))
    if clash:
        raise UserError(
            f"pipeline.{where}: {', '.join(clash)} is set by the pipeline (from run_dir and the "
            "stage's dataset/model names); remove it"
        )
    try:
        return cls.model_validate({**(defaults or {}), **fields, **fixed})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in err.errors()
        )
        raise UserError(f"pipeline.{where}: invalid {cls.__name__}: {problems}") from None


def _names(value: Any, where: str, known: dict[str, str], what: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value or [])
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(
            f"pipeline.{where}: {', '.join(map(str, unknown))} is not one of the {what}: "
            f"{', '.join(known) or '(none)'}"
        )
    return names


def _one(value: Any, where: str, known: dict[str, str], what: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"pipeline.{where}: name one of the {what}: {', '.join(known) or '(none)'}")
    return _names(value, where, known, what)[0]


def plan(cfg: PipelineConfig) -> list[Step]:
    """Every step of ``cfg`` in run order, each with its validated stage config. Raises UserError
    naming the section for any invalid field or dangling dataset/policy name: nothing runs first."""
    run = cfg.run_dir.rstrip("/")

    def path(*parts: str) -> str:
        return storage.join(run, *parts)

    steps: list[Step] = []
    base = cfg.base_model
    if cfg.tiny_model is not None:
        out = path("models", "tiny")
        tiny = _build(TinyModelConfig, "tiny_model", cfg.tiny_model, fixed={"out": out})
        steps.append(Step("model", "model", tiny, _build_tiny, out, storage.join(out, "config.json")))
        base = base or out
    assert base is not None  # PipelineConfig requires base_model or tiny_model

    datasets: dict[str, str] = {}
    for name, fields in cfg.datasets.items():
        out = path("data", name)
        prep = _build(
            PrepareConfig, f"datasets.{name}", fields or {}, fixed={"out": out}, defaults={"tokenizer": base}
        )
        steps.append(
            Step(
                f"prepare:{name}",
                "prepare",
                prep,
                _prepare,
                out,
                storage.join(out, "stats.json"),
                inputs=(prep.tokenizer,) if prep.tokenizer else (),
            )
        )
        datasets[name] = out

    models: dict[str, str] = {}  # run name -> exported model folder

    def train(
        group: str,
        step_id: str,
        where: str,
        fields: dict[str, Any],
        fixed: dict[str, Any],
        defaults: dict[str, Any],
    ) -> str:
        tc = _build(
            TrainConfig, where, _merge(cfg.train, fields), fixed={**fixed, "run_dir": run}, defaults=defaults
        )
        out = path("models", str(tc.name))
        inputs = (tc.model, tc.data, *([tc.live_reference] if tc.live_reference else []))
        steps.append(
            Step(
                step_id,
                group,
                tc,
                _train,
                out,
                storage.join(out, "config.json"),
                inputs=inputs,
                clean=(out, path("train", str(tc.name))),
            )
        )
        models[str(tc.name)] = out
        return out

    if cfg.sft is not None:
        own, fields = _pop(cfg.sft, ["data"])
        data = datasets[_one(own.get("data"), "sft.data", datasets, "datasets")]
        train("sft", "sft", "sft", fields, {"stage": "sft", "name": "sft", "data": data}, {"model": base})
    start = models.get("sft", base)  # later stages start from the SFT model

    if cfg.ensemble and cfg.oracle is None:
        raise UserError("pipeline.ensemble: the e-DPO Oracles take the oracle section's settings; add one")
    if cfg.oracle is not None:
        own, fields = _pop(cfg.oracle, ["data"])
        data = datasets[_one(own.get("data"), "oracle.data", datasets, "datasets")]
        fixed = {"stage": "oracle", "data": data}
        train(
            "oracle", "oracle", "oracle", fields, fixed | {"name": "oracle", "ensemble": 1}, {"model": start}
        )
        # e-DPO: plain Bradley-Terry Oracles that differ only in their reward head's seed.
        for k in range(cfg.ensemble):
            train(
                "ensemble",
                f"ensemble:{k}",
                "oracle (ensemble member)",
                fields,
                fixed | {"name": f"oracle-ens-{k}", "ensemble": cfg.ensemble, "head_seed": k},
                {"model": start},
            )

    scored: dict[str, str] = {}  # "one" / "ensemble" -> scored dataset folder
    if cfg.score is not None:
        own, fields = _pop(cfg.score, ["data"])
        name = _one(own.get("data"), "score.data", datasets, "datasets")
        if "oracle" not in models:
            raise UserError("pipeline.score: scoring needs the oracle stage (an oracle section)")
        members = [models[f"oracle-ens-{k}"] for k in range(cfg.ensemble)]
        for kind, suffix, oracles in (("one", "", [models["oracle"]]), ("ensemble", "_ensemble", members)):
            if not oracles:
                continue
            out = path("scored", name + suffix)
            sc = _build(
                ScoreConfig,
                "score",
                fields,
                fixed={
                    "data": datasets[name],
                    "out": out,
                    "oracles": oracles,
                    "reference": models.get("sft"),
                },
            )
            steps.append(
                Step(
                    f"score:{name}{suffix}",
                    "score",
                    sc,
                    _score,
                    out,
                    storage.join(out, "scoring.json"),
                    inputs=(sc.data, *sc.oracles, *([sc.reference] if sc.reference else [])),
                )
            )
            scored[kind] = out

    aligned: list[str] = []
    if cfg.align is not None:
        own, shared = _pop(cfg.align, ["runs"])
        runs = own.get("runs")
        if isinstance(runs, list):
            runs = {str(name): {} for name in runs}
        if not isinstance(runs, dict) or not runs:
            raise UserError("pipeline.align.runs: name the runs, e.g. [drdo, dpo] or {drdo: {gamma: 2}}")
        for run_name, overrides in runs.items():
            overrides = dict(overrides or {})
            loss = overrides.get("loss", run_name)
            source = scored.get("ensemble" if loss == "edpo" else "one")
            if source is None:
                need = (
                    "a score section and ensemble: K (e-DPO's Oracles)"
                    if loss == "edpo"
                    else "a score section"
                )
                raise UserError(f"pipeline.align.runs.{run_name}: alignment reads scored data; add {need}")
            train(
                "align",
                f"align:{run_name}",
                f"align.runs.{run_name}",
                _merge(shared, overrides),
                {"stage": "align", "name": f"align-{run_name}", "data": source},
                {"model": start, "loss": run_name},
            )
            aligned.append(f"align-{run_name}")

    samples: dict[tuple[str, str], str] = {}
    prompt_sets: list[str] = []
    policies: list[str] = []
    if cfg.generate is not None:
        own, fields = _pop(cfg.generate, ["prompts", "policies"])
        prompt_sets = _names(own.get("prompts"), "generate.prompts", datasets, "datasets")
        if not prompt_sets:
            raise UserError("pipeline.generate.prompts: name the prompt datasets to sample")
        candidates = {n: m for n, m in models.items() if n == "sft" or n.startswith("align-")}
        policies = _names(
            own.get("policies") or list(candidates), "generate.policies", candidates, "policies"
        )
        for prompts in prompt_sets:
            for policy in policies:
                out = path("samples", prompts, policy)
                gen = _build(
                    GenerateConfig,
                    "generate",
                    fields,
                    fixed={"model": models[policy], "prompts": datasets[prompts], "out": out},
                )
                steps.append(
                    Step(
                        f"generate:{prompts}:{policy}",
                        "generate",
                        gen,
                        _generate,
                        out,
                        storage.join(out, "generation.json"),
                        inputs=(gen.model, gen.prompts),
                    )
                )
                samples[(prompts, policy)] = out
    sampled = {p: p for p in policies}

    def comparisons(section: str, raw: dict[str, Any] | None) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(prompt set, A, B, stage fields) for a win-rate or judge section."""
        own, fields = _pop(raw, ["a", "against", "prompts"])
        a = _one(own.get("a", "align-drdo"), f"{section}.a", sampled, "generated policies")
        against = own.get("against") or [p for p in policies if p != a] + ["reference"]
        b_names = _names(
            against,
            f"{section}.against",
            {**sampled, "reference": "reference"},
            "generated policies (or reference)",
        )
        prompts = _names(
            own.get("prompts") or prompt_sets,
            f"{section}.prompts",
            dict.fromkeys(prompt_sets),
            "generated prompt sets",
        )
        return [(p, a, b, fields) for p in prompts for b in b_names]

    oracle = models.get("oracle")
    if cfg.winrate is not None:
        if oracle is None:
            raise UserError("pipeline.winrate: Oracle win rates need the oracle stage")
        for prompts, a, b, fields in comparisons("winrate", cfg.winrate):
            out = path("eval", prompts, f"winrate-{a}-vs-{b}")
            wr = _build(
                WinrateConfig,
                "winrate",
                fields,
                fixed={
                    "a": samples[(prompts, a)],
                    "b": samples[(prompts, b)] if b != "reference" else "reference",
                    "oracle": oracle,
                    "out": out,
                },
            )
            steps.append(
                Step(
                    f"winrate:{prompts}:{a}-vs-{b}",
                    "winrate",
                    wr,
                    _winrate,
                    out,
                    storage.join(out, "winrate.json"),
                    inputs=(wr.a, wr.b, oracle),
                )
            )

    if cfg.judge is not None:
        for prompts, a, b, fields in comparisons("judge", cfg.judge):
            out = path("eval", prompts, f"judge-{a}-vs-{b}")
            jc = _build(
                JudgeConfig,
                "judge",
                fields,
                fixed={
                    "a": samples[(prompts, a)],
                    "b": samples[(prompts, b)] if b != "reference" else "reference",
                    "out": out,
                },
            )
            steps.append(
                Step(
                    f"judge:{prompts}:{a}-vs-{b}",
                    "judge",
                    jc,
                    _judge,
                    out,
                    storage.join(out, "judge.json"),
                    inputs=(jc.a, jc.b),
                    skip_reason=_judge_unavailable(jc),
                )
            )

    if cfg.kl is not None:
        own, fields = _pop(cfg.kl, ["policies", "prompts"])
        if "sft" not in models:
            raise UserError("pipeline.kl: KL is measured against the SFT model; add an sft section")
        kl_policies = _names(
            own.get("policies") or [p for p in policies if p != "sft"],
            "kl.policies",
            sampled,
            "generated policies",
        )
        prompts = _one(
            own.get("prompts") or (prompt_sets[0] if prompt_sets else None),
            "kl.prompts",
            dict.fromkeys(prompt_sets),
            "generated prompt sets",
        )
        for policy in kl_policies:
            out = path("eval", prompts, f"kl-{policy}")
            kc = _build(
                KLConfig,
                "kl",
                fields,
                fixed={
                    "policy": models[policy],
                    "reference": models["sft"],
                    "samples": samples[(prompts, policy)],
                    "out": out,
                },
                defaults={"label": policy},
            )
            steps.append(
                Step(
                    f"kl:{prompts}:{policy}",
                    "kl",
                    kc,
                    _kl,
                    out,
                    storage.join(out, "kl.json"),
                    inputs=(kc.policy, kc.reference, kc.samples),
                )
            )

    if cfg.report is not None:
        rc = _build(ReportConfig, "report", cfg.report, fixed={"run": run}, defaults={"title": cfg.title})
        steps.append(Step("report", "report", rc, _report, rc.out or path("report"), None))

    # A step needs the steps whose outputs it reads.
    owners = {s.output: s.id for s in steps}
    for s in steps:
        s.needs = sorted(
            {owners[i] for i in s.inputs if i in owners and owners[i] != s.id},
            key=[x.id for x in steps].index,
        )
    return steps


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


def _redacted(value: Any) -> Any:
    """The config for pipeline.json, without any api_key a section may carry."""
    if isinstance(value, dict):
        return {k: "<redacted>" if k == "api_key" and v else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _write_status(run: str, status: dict[str, Any]) -> None:
    status["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    storage.makedirs(run)
    storage.write_json(storage.join(run, STATUS_FILE), status)


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
    position = {s.id: i for i, s in enumerate(steps)}
    blocked = {s.id: [n for n in s.needs if n not in chosen_ids and not done[n]] for s in chosen}
    for s in chosen:
        missing = blocked[s.id]
        if missing and not dry_run:
            raise UserError(
                f"stage {s.id} reads the outputs of {', '.join(missing)}, which have not finished "
                f"under {cfg.run_dir}: add them to --stages (or run without --stages)"
            )
    run = cfg.run_dir.rstrip("/")
    if dry_run:
        table = Table(title=f"pipeline plan: {run}")
        for column in ("#", "stage", "state", "output (under run_dir)"):
            table.add_column(column, overflow="fold")
        for i, s in enumerate(chosen, 1):
            state = "done (skip)" if done[s.id] and not force else "run"
            if blocked[s.id]:
                state = f"blocked: needs {', '.join(blocked[s.id])}"
            table.add_row(str(i), s.id, state, s.output.removeprefix(run + "/"))
        console.print(table)
        return {"run_dir": run, "stages": {s.id: {"status": "planned", "done": done[s.id]} for s in chosen}}

    status_path = storage.join(run, STATUS_FILE)
    status: dict[str, Any] = storage.read_json(status_path) if _exists(status_path) else {}
    status.update(title=cfg.title, run_dir=run, config=_redacted(cfg.model_dump(mode="json")))
    record: dict[str, Any] = status.setdefault("stages", {})
    console.print(f"[bold]pipeline[/] {cfg.title or ''} -> {run}: {len(chosen)} of {len(steps)} stages")
    started_all = time.perf_counter()
    ran: set[str] = set()
    for i, s in enumerate(chosen, 1):
        label = f"[{i}/{len(chosen)}] {s.id}"
        stale = [n for n in s.needs if n in ran]
        if done[s.id] and not force and not stale:
            console.print(f"[dim]skip[/]  {label} (outputs exist: {s.output})")
            record[s.id] = {"status": "skipped: outputs exist", "output": s.output}
            continue
        reason = s.skip_reason() if s.skip_reason else None
        if reason:
            console.print(f"[yellow]skip[/]  {label}: {reason}")
            record[s.id] = {"status": f"skipped: {reason}", "output": s.output}
            _write_status(run, status)
            continue
        console.rule(f"[bold]{label}[/] {'(rerun: ' + ', '.join(stale) + ' changed)' if stale else ''}")
        config = s.config
        if done[s.id]:  # forced or stale: start over instead of reusing / resuming what is there
            for target in s.clean:
                storage.remove(target)
            if "force" in type(config).model_fields:
                config = config.model_copy(update={"force": True})
        started = time.perf_counter()
        record[s.id] = {
            "status": "running",
            "output": s.output,
            "started": datetime.now(timezone.utc).isoformat(),
        }
        _write_status(run, status)
        try:
            s.action(config, console)
        except BaseException as err:
            record[s.id].update(
                status="failed",
                error=str(err).splitlines()[0][:500] if str(err) else type(err).__name__,
                elapsed_s=round(time.perf_counter() - started, 1),
            )
            _write_status(run, status)
            console.print(
                f"[red]failed[/] {label} after {time.perf_counter() - started:.1f}s; rerun the same command "
                "to resume (finished stages are skipped, training resumes from its last checkpoint)"
            )
            raise
        elapsed = time.perf_counter() - started
        ran.add(s.id)
        record[s.id].update(status="done", elapsed_s=round(elapsed, 1))
        _write_status(run, status)
        console.print(
            f"[green]done[/]  {label} in {elapsed:.1f}s "
            f"(pipeline {time.perf_counter() - started_all:.0f}s, {len(chosen) - i} stages left)"
        )
    total = time.perf_counter() - started_all
    table = Table(title=f"pipeline {run} ({total:.0f}s)")
    for column in ("stage", "status", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for s in sorted(chosen, key=lambda s: position[s.id]):
        entry = record.get(s.id, {})
        seconds = entry.get("elapsed_s") if entry.get("status") == "done" else None
        table.add_row(s.id, str(entry.get("status", "-")), f"{seconds:.1f}" if seconds is not None else "-")
    console.print(table)
    return {
        "run_dir": run,
        "stages": {s.id: record.get(s.id, {}) for s in chosen},
        "elapsed_s": round(total, 1),
    }
