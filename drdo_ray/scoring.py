"""`drdo-ray score`: precompute Oracle rewards r*(x, y) and reference log-probs for every row
of a prepared dataset (docs/concepts.md, the scoring stage), so policy training never holds the Oracle or the
reference model in memory.

    OUT/data/*.parquet      every input column + oracle_chosen, oracle_rejected
                            (+ oracle_{chosen,rejected}_k per e-DPO member, K > 1)
                            (+ ref_chosen_logps, ref_rejected_logps with a reference)
    OUT/scoring.json        provenance: what scored what (content fingerprints), throughput
    OUT/source_stats.json   the input's stats.json, for traceability

Inference runs as a Ray Data ``map_batches`` over an actor pool: each actor loads the models
once and scores a batch with ONE forward pass per model over chosen + rejected. A finished
scoring is reused when the same inputs are asked for again, and refused (never silently
reused) when they differ."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from . import storage
from .artifacts import (
    check_model,
    device_dtype,
    fingerprint,
    gpus_per_actor,
    is_remote,
    local_model,
    pad_id,
    parquet_files,
    resolve,
    reusable,
)
from .attention import attn_kwargs, resolve_attention
from .cluster_resources import check_actor_pool
from .config import ScoreConfig
from .errors import UserError

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
SCORING_FILE = "scoring.json"


def _schema(data_dir: str) -> pa.Schema:
    files = parquet_files(data_dir)
    if not files:
        raise UserError(f"{data_dir} holds no data/*.parquet files")
    with storage.open_binary(storage.join(data_dir, "data", files[0][0])) as f:
        return pq.read_schema(f)


# ------------------------------------------------------------------------ input checks


def _check_dataset(data: str) -> dict[str, Any]:
    """The input's stats.json, after checking it is a tokenized preference-pair dataset."""
    from .data.sources import SOURCES

    if not storage.exists(data):
        raise UserError(f"dataset folder does not exist: {data}")
    stats_path = storage.join(data, "stats.json")
    if not storage.exists(stats_path):
        raise UserError(f"{data} is not a prepared dataset (no stats.json); run drdo-ray data prepare first")
    stats = storage.read_json(stats_path)
    source = SOURCES.get(stats.get("source", ""))
    if source is not None and source.kind != "pairs":
        raise UserError(
            f"{data} holds {source.kind} rows (source {source.name}); scoring needs preference pairs"
        )
    missing = [c for c in TOKEN_COLUMNS if c not in _schema(data).names]
    if missing:
        raise UserError(
            f"{data} has no token columns ({', '.join(missing)}); prepare it with --tokenizer "
            "(the policy's tokenizer) before scoring"
        )
    return stats


# ------------------------------------------------------------------------- Ray Data stage


def _set_column(table: pa.Table, name: str, values: Any) -> pa.Table:
    """Append, or replace when the input already holds the column (rescoring a scored copy)."""
    array = pa.array(values, pa.float64())
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


class Scorer:
    """Ray Data callable class: models load once per actor, frozen, in eval mode."""

    def __init__(
        self,
        oracles: Sequence[str],
        reference: str | None,
        *,
        reduction: str,
        dtype: str,
        attention: str = "sdpa",
    ) -> None:
        from transformers import AutoModelForCausalLM

        from .models import PolicyWithRewardHead

        self.device, self.dtype = device_dtype(dtype)
        self.reduction = reduction
        load = {"dtype": self.dtype, **attn_kwargs(attention)}
        self.oracles = [
            PolicyWithRewardHead.from_pretrained(local_model(p), **load).to(self.device).freeze()
            for p in oracles
        ]
        self.reference = None
        if reference:
            self.reference = AutoModelForCausalLM.from_pretrained(local_model(reference), **load).to(
                self.device
            )
            self.reference.eval().requires_grad_(False)
        models = [m.lm for m in self.oracles] + ([self.reference] if self.reference is not None else [])
        # The dataset was tokenized once; every model must embed all its ids.
        self.vocab = min(m.get_input_embeddings().num_embeddings for m in models)
        self.pad_id = pad_id(next(iter(oracles), reference))  # type: ignore[arg-type]

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        from .models import collate_pairs, pair_forward

        columns = {name: batch[name].to_pylist() for name in TOKEN_COLUMNS}
        for name, values in columns.items():
            if any(v is None or len(v) == 0 for v in values):
                raise ValueError(f"a row has no {name}: scoring needs prompt, chosen and rejected tokens")
        top = max(max(max(ids) for ids in values) for values in columns.values())
        if top >= self.vocab:
            raise ValueError(
                f"token id {top} is outside the models' vocabulary ({self.vocab}): the dataset was "
                "tokenized with a different tokenizer"
            )
        collated = collate_pairs(
            columns["prompt_ids"], columns["chosen_ids"], columns["rejected_ids"], pad_id=self.pad_id
        )
        collated = {k: v.to(self.device) for k, v in collated.items()}
        added: dict[str, Any] = {}
        with torch.inference_mode():
            chosen, rejected = [], []
            for model in self.oracles:
                out = pair_forward(model, collated, reduction=self.reduction)  # type: ignore[arg-type]
                chosen.append(out.chosen_rewards.double().cpu())
                rejected.append(out.rejected_rewards.double().cpu())
            if self.oracles:
                added["oracle_chosen"] = torch.stack(chosen).mean(0).numpy()
                added["oracle_rejected"] = torch.stack(rejected).mean(0).numpy()
                if len(self.oracles) > 1:
                    for k, (c, r) in enumerate(zip(chosen, rejected)):
                        added[f"oracle_chosen_{k}"] = c.numpy()
                        added[f"oracle_rejected_{k}"] = r.numpy()
            if self.reference is not None:
                out = pair_forward(self.reference, collated, reduction=self.reduction)  # type: ignore[arg-type]
                added["ref_chosen_logps"] = out.chosen_logps.double().cpu().numpy()
                added["ref_rejected_logps"] = out.rejected_logps.double().cpu().numpy()
        for name, values in added.items():
            batch = _set_column(batch, name, values)
        return batch


def columns_added(num_oracles: int, reference: bool) -> list[str]:
    names = ["oracle_chosen", "oracle_rejected"] if num_oracles else []
    if num_oracles > 1:
        names += [f"oracle_{side}_{k}" for k in range(num_oracles) for side in ("chosen", "rejected")]
    if reference:
        names += ["ref_chosen_logps", "ref_rejected_logps"]
    return names


# ---------------------------------------------------------------------------- provenance


def oracle_count(provenance: dict[str, Any]) -> int:
    """How many Oracles scored the dataset (e-DPO needs >= 2 per-member reward columns)."""
    return len(provenance.get("oracles") or [])


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    def fp(entry: dict[str, Any] | None) -> str | None:
        return entry["fingerprint"] if entry else None

    def name(entry: dict[str, Any] | None) -> str:
        return entry["path"] if entry else "none"

    diffs: list[str] = []
    if fp(old.get("data")) != fp(new["data"]):
        diffs.append(f"a different dataset (or it changed since): {name(old.get('data'))}")
    old_oracles, new_oracles = old.get("oracles") or [], new["oracles"]
    if len(old_oracles) != len(new_oracles):
        diffs.append(f"{len(old_oracles)} oracle(s), not {len(new_oracles)}")
    else:
        for k, (a, b) in enumerate(zip(old_oracles, new_oracles)):
            if fp(a) != fp(b):
                diffs.append(f"a different oracle #{k}: {name(a)}, not {name(b)}")
    if fp(old.get("reference")) != fp(new["reference"]):
        diffs.append(f"a different reference: {name(old.get('reference'))}, not {name(new['reference'])}")
    elif old.get("reduction") != new["reduction"]:
        diffs.append(f"reduction {old.get('reduction')}, not {new['reduction']}")
    return diffs


def _request(cfg: ScoreConfig, data: str, oracles: list[str], reference: str | None) -> dict[str, Any]:
    return {
        "data": {"path": data, "fingerprint": fingerprint(data)},
        "oracles": [{"path": p, "fingerprint": fingerprint(p)} for p in oracles],
        "reference": {"path": reference, "fingerprint": fingerprint(reference)} if reference else None,
        # Oracle rewards do not depend on it; recorded only where it shaped the ref columns.
        "reduction": cfg.reduction if reference else None,
    }


# ---------------------------------------------------------------------------------- score


def score(cfg: ScoreConfig, console: Console | None = None) -> dict[str, Any]:
    """Score ``cfg.data`` into ``cfg.out``; returns the provenance written to OUT/scoring.json
    plus ``reused`` (True when an identical earlier scoring was kept)."""
    console = console or Console(stderr=True)
    data, out, stats, oracles, reference = _checked_inputs(cfg)
    request = _request(cfg, data, oracles, reference)

    scoring_path = storage.join(out, SCORING_FILE)
    old = reusable(scoring_path, force=cfg.force, differences=lambda old: _differences(old, request), out=out)
    if old is not None and storage.exists(storage.join(out, "data")):
        console.print(
            f"[bold]score[/] reused: {out} was already scored from the same inputs (--force rescores)"
        )
        return {**old, "reused": True}

    from .ray_runtime import ensure_ray

    ensure_ray()
    started = time.perf_counter()  # throughput excludes cluster start-up
    gpus = gpus_per_actor(cfg.num_gpus_per_actor)
    # An actor pool Ray could never place fails here; one that needs new nodes waits for them, bounded.
    check_actor_pool(
        gpus, cfg.num_actors, console, timeout_s=cfg.startup_timeout, resources=cfg.resources_per_actor
    )
    attention = resolve_attention(cfg, gpu=gpus > 0, stage="score")
    what = f"{len(oracles)} oracle(s)" + (f" + reference ({cfg.reduction} log-probs)" if reference else "")
    console.print(f"[bold]score[/] {data} with {what}: {cfg.num_actors} actor(s), {gpus} GPU each")

    # A crash midway must not leave a scoring.json that vouches for partial data: remove it
    # first, write it last.
    for target in (SCORING_FILE, "data", "source_stats.json"):
        storage.remove(storage.join(out, target))
    storage.makedirs(out)

    rows = _score_rows(cfg, data, out, oracles, reference, gpus=gpus, attention=attention)
    elapsed = time.perf_counter() - started

    storage.write_json(storage.join(out, "source_stats.json"), stats)
    provenance: dict[str, Any] = {
        **request,
        "rows": rows,
        "columns_added": columns_added(len(oracles), reference is not None),
        "dtype": cfg.dtype,
        "attn_implementation": attention,
        "batch_size": cfg.batch_size,
        "num_actors": cfg.num_actors,
        "num_gpus_per_actor": gpus,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed, 1) if elapsed > 0 else None,
        "outputs": {
            "data": storage.join(out, "data"),
            "scoring": scoring_path,
            "source_stats": storage.join(out, "source_stats.json"),
        },
    }
    storage.write_json(scoring_path, provenance)
    return {**provenance, "reused": False}


def _checked_inputs(cfg: ScoreConfig) -> tuple[str, str, dict[str, Any], list[str], str | None]:
    """(data, out, the dataset's stats, oracles, reference), each resolved and checked."""
    if not cfg.oracles and not cfg.reference:
        raise UserError("nothing to score: give at least one --oracle or a --reference")
    data = resolve(cfg.data)
    out = cfg.out if is_remote(cfg.out) else str(Path(cfg.out).expanduser().resolve())
    if data.rstrip("/") == out.rstrip("/"):
        raise UserError("--out must differ from --data: scoring writes a new dataset beside the prepared one")
    stats = _check_dataset(data)
    oracles = [resolve(p) for p in cfg.oracles]
    reference = resolve(cfg.reference) if cfg.reference else None
    for k, path in enumerate(oracles):
        check_model(path, role=f"oracle #{k}", oracle=True)
    if reference:
        check_model(reference, role="reference", oracle=False)
    return data, out, stats, oracles, reference


def _score_rows(
    cfg: ScoreConfig,
    data: str,
    out: str,
    oracles: list[str],
    reference: str | None,
    *,
    gpus: float,
    attention: str,
) -> int:
    """Stream DATA/data through the Scorer actor pool into OUT/data; returns the row count."""
    import ray.data

    rows_in = ray.data.read_parquet(storage.join(data, "data"))
    rows = rows_in.count()  # from parquet metadata; the scorer keeps every row
    scored = rows_in.map_batches(
        Scorer,
        fn_constructor_args=(oracles, reference),
        fn_constructor_kwargs={"reduction": cfg.reduction, "dtype": cfg.dtype, "attention": attention},
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_gpus=gpus,
        resources=cfg.resources_per_actor or None,
    )
    # Without a floor Ray writes one small file per output block.
    scored.write_parquet(storage.join(out, "data"), min_rows_per_file=50_000)
    return rows


# --------------------------------------------------------------------------- check_scored


def check_scored(
    data_dir: str,
    *,
    needs: Sequence[str],
    reduction: str | None = None,
    oracles: Sequence[str] | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """For the training stage: is ``data_dir`` scored with what the run needs? ``needs``: column
    names (e.g. ``oracle_chosen``, ``oracle_chosen_0``, ``ref_chosen_logps``). ``reduction`` is
    checked when ref columns are needed; ``oracles``/``reference`` (paths or hub ids) are
    checked against the recorded fingerprints. Any mismatch is a UserError; returns the
    provenance ({} for an unscored folder when nothing is needed)."""
    path = storage.join(data_dir, SCORING_FILE)
    if not storage.exists(path):
        if needs:
            raise UserError(f"{data_dir} is not a scored dataset; run drdo-ray score first")
        return {}
    provenance: dict[str, Any] = storage.read_json(path)
    present = set(_schema(data_dir).names)
    missing = [c for c in needs if c not in present]
    if missing:
        k = oracle_count(provenance)
        ref = "with" if provenance.get("reference") else "without"
        raise UserError(
            f"{data_dir} lacks column(s) {', '.join(missing)} (scored with {k} oracle(s), {ref} a reference); "
            "rescore it with the needed --oracle/--reference"
        )
    if (
        reduction is not None
        and any(c.startswith("ref_") for c in needs)
        and provenance.get("reduction") != reduction
    ):
        raise UserError(
            f"{data_dir} holds {provenance.get('reduction')}-reduced reference log-probs, but this run uses "
            f"reduction={reduction}; rescore with --reduction {reduction}"
        )
    if oracles is not None:
        recorded = [o["fingerprint"] for o in provenance.get("oracles") or []]
        wanted = [fingerprint(resolve(p)) for p in oracles]
        if recorded != wanted:
            raise UserError(
                f"{data_dir} was scored with a different oracle set "
                f"({', '.join(o['path'] for o in provenance.get('oracles') or []) or 'none'}); "
                "rescore it with drdo-ray score --force"
            )
    if reference is not None:
        recorded_ref = (provenance.get("reference") or {}).get("fingerprint")
        if recorded_ref != fingerprint(resolve(reference)):
            raise UserError(
                f"{data_dir} was scored with a different reference "
                f"({(provenance.get('reference') or {}).get('path', 'none')}); rescore it with drdo-ray score --force"
            )
    return provenance


# ------------------------------------------------------------ single sequences (evaluation)


def sequence_rewards(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_length: int | None = None,
) -> list[float]:
    """Oracle rewards r*(x, y) of single (prompt, response) sequences in one forward pass: the
    evaluation counterpart of :class:`Scorer`'s pair pass (Oracle win rates score each sampled
    response on its own). ``model`` is a frozen PolicyWithRewardHead; the batch goes to the
    device of its parameters. Responses longer than ``max_length`` are cut from the right."""
    import torch

    from .models import collate_sequences, sequence_forward

    device = next(model.parameters()).device
    batch = collate_sequences(prompt_ids, response_ids, pad_id=pad_id, max_length=max_length)
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.inference_mode():
        out = sequence_forward(model, batch, reduction="mean")
    if out.rewards is None:
        raise ValueError("the model has no reward head: Oracle rewards need a PolicyWithRewardHead")
    return out.rewards.double().cpu().tolist()
