"""Ray Train assembly: the per-worker entry point around :func:`loop.run`, and the
TorchTrainer that runs it over a Ray Data dataset with checkpoints and failure recovery."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.data import ExecutionOptions
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from rich.console import Console

from .. import storage
from ..artifacts import check_model, edpo_oracle_name, local_model, pad_id, resolve
from ..attention import resolve_attention
from ..config import TrainConfig, edpo_oracle_settings
from ..errors import UserError
from ..losses import ALIGN_LOSSES
from ..ray_runtime import ensure_ray
from ..run_layout import TRAINING_CONFIG_FILE, RunLayout
from .batches import Collator
from .data_check import DataInfo, inspect_data
from .engine import World
from .loop import run


def model_dir(cfg: TrainConfig) -> str:
    return RunLayout(cfg.run_dir).model(cfg.run_name)


def _train_dir(cfg: TrainConfig) -> str:
    return RunLayout(cfg.run_dir).train(cfg.run_name)


def _local_or_temp(uri: str, tag: str) -> Path:
    """The folder itself when local; a node-local staging folder (uploaded later) otherwise."""
    if storage.is_local(uri):
        return Path(uri.removeprefix("file://"))
    # A stable name (str hash() differs per process): a restarted worker finds its folder again.
    return Path(tempfile.gettempdir()) / f"drdo-{tag}-{hashlib.sha1(uri.encode()).hexdigest()[:16]}"


class _RayReporter:
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        name = f"step_{int(metrics['global_step']):07d}" if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def export_fn(cfg: TrainConfig, world: World):
    """The loop's ``export``: rank 0 writes the final model folder RUN/models/<name> (uploaded
    when the run directory is remote)."""

    def export(model: torch.nn.Module, _engine: Any) -> None:
        if world.rank != 0:
            return
        from transformers import AutoTokenizer

        from ..models import PolicyWithRewardHead
        from ..models.lora import merged_lm

        target = model_dir(cfg)
        local = _local_or_temp(target, "model")
        tokenizer = AutoTokenizer.from_pretrained(local_model(cfg.model))
        # LoRA: the adapters merged into a fresh float32 copy of the base (a plain transformers
        # folder), or, with lora.export=adapters, the live model's adapters written by peft.
        merged = None
        if cfg.lora.enabled and cfg.lora.export == "merged":
            merged = merged_lm(model, local_model(cfg.model))
        if isinstance(model, PolicyWithRewardHead) and cfg.stage == "oracle":
            model.save_pretrained(local, tokenizer=tokenizer, lm=merged)  # the Oracle keeps its head
        elif isinstance(model, PolicyWithRewardHead):
            model.export_policy(local, tokenizer=tokenizer, lm=merged)  # the deployable policy has none
        else:
            (merged if merged is not None else model).save_pretrained(local)
            tokenizer.save_pretrained(local)
        (local / TRAINING_CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
        if not storage.is_local(target):
            storage.upload_dir(str(local), target)

    return export


def _record_worker(cfg: TrainConfig, world: World) -> None:
    """RUN/train/<name>/workers/rank-<r>.json: where each rank ran (node and its resources, host,
    process), written by the worker itself to the shared run directory, so placement is
    checkable after the fact."""
    import os
    import socket

    folder = RunLayout(cfg.run_dir).workers(cfg.run_name)
    storage.makedirs(folder)
    node_id = ray.get_runtime_context().get_node_id()
    # The node's resources say its type on an autoscaling cluster (gpu_train: cluster.yaml's).
    resources = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
    storage.write_json(
        storage.join(folder, f"rank-{world.rank}.json"),
        {
            "rank": world.rank,
            "world_size": world.size,
            "node_id": node_id,
            "node_ip": ray.util.get_node_ip_address(),
            "node_resources": {k: v for k, v in resources.items() if not k.startswith("node:")},
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        },
    )


def loop_config(cfg: TrainConfig, info: DataInfo, pad: int) -> dict[str, Any]:
    """``train_loop_config`` of :func:`train_loop_per_worker`. The validated config and the data
    check travel to the workers as they are (pickled): nothing is dumped and validated again."""
    return {"train": cfg, "data": info, "pad_id": pad}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    cfg: TrainConfig = config["train"]
    info: DataInfo = config["data"]
    ctx = ray.train.get_context()
    world = World(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank())
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    shard = ray.train.get_dataset_shard("train")
    collator = Collator(
        pad_id=config["pad_id"],
        pairs=cfg.stage != "sft",
        extra=list(info.extra),
        edpo_oracles=info.edpo_oracles,
        padding_side=cfg.padding_side,
    )

    def batches(_epoch: int):
        # Each call is a fresh pass over this worker's shard, in the same order every time
        # (preserve_order), so a restart can skip exactly the micro-batches already consumed.
        return shard.iter_torch_batches(batch_size=cfg.micro_batch_size, collate_fn=collator, drop_last=True)

    _record_worker(cfg, world)
    metrics_dir = _local_or_temp(_train_dir(cfg), "metrics")
    common = dict(
        batches=batches,
        num_rows=info.num_rows,
        world=world,
        reporter=_RayReporter(),
        metrics_dir=metrics_dir,
        export=export_fn(cfg, world),
        failure_marker=metrics_dir / ".injected_failure",
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        run(cfg, **common)
    else:
        with checkpoint.as_directory() as directory:
            run(cfg, restore_dir=Path(directory), **common)
    if world.rank == 0 and not storage.is_local(_train_dir(cfg)):
        storage.upload_dir(str(metrics_dir), _train_dir(cfg))


def validate(cfg: TrainConfig) -> tuple[TrainConfig, DataInfo]:
    """Every check that can fail before a worker starts, with one clear message each."""
    # A loss outside align, or a loss's setting (live_reference...) given to another, the config refused.
    if cfg.stage == "align" and cfg.loss is None:
        raise UserError(f"train align needs --loss ({', '.join(ALIGN_LOSSES)})")
    product = cfg.micro_batch_size * cfg.grad_accum * cfg.num_workers
    if cfg.global_batch_size is not None and cfg.global_batch_size != product:
        raise UserError(
            f"global_batch_size {cfg.global_batch_size} is not micro_batch_size x grad_accum x num_workers "
            f"= {cfg.micro_batch_size} x {cfg.grad_accum} x {cfg.num_workers} = {product}"
        )
    if cfg.logps_chunk_size and cfg.deepspeed.enabled and cfg.deepspeed.zero_stage == 3:
        raise UserError("logps_chunk_size needs the full LM head outside forward: use ZeRO stage 0-2, not 3")
    check_model(cfg.model, role="model")
    if cfg.live_reference:
        check_model(cfg.live_reference, role="live reference")
    _check_installed(cfg)
    info = inspect_data(cfg)
    # Workers do not share the driver's working directory: hand them absolute local paths (the
    # inputs exist, checked above; the run directory may not yet).
    absolute = {k: resolve(v) for k in ("model", "data", "live_reference") if (v := getattr(cfg, k))}
    if cfg.lora.enabled:
        _check_lora(cfg, absolute)
    run_dir = RunLayout(cfg.run_dir).absolute().root
    attention = resolve_attention(cfg, gpu=cfg.use_gpu, stage=f"train {cfg.stage}")
    update = {"name": cfg.run_name, "run_dir": run_dir, "attn_implementation": attention, **absolute}
    return cfg.model_copy(update=update), info


def _check_installed(cfg: TrainConfig) -> None:
    """The packages the settings need, on the driver (the workers share its environment)."""
    needs = [("deepspeed", "deepspeed is enabled", "deepspeed")] if cfg.deepspeed.enabled else []
    if cfg.lora.enabled:
        needs.append(("peft", "LoRA (lora.enabled) trains through peft", "lora"))
    if cfg.optimizer == "paged_adamw_32bit":
        needs.append(("bitsandbytes", "optimizer paged_adamw_32bit is bitsandbytes'", "gpu"))
    for module, what, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{what} but {module} is not installed: pip install 'drdo-ray[{extra}]'")


def _check_lora(cfg: TrainConfig, absolute: dict[str, str]) -> None:
    """LoRA needs adapter targets for the architecture, and its live reference is the base model
    with the adapters off, so it must be the model the run starts from."""
    if cfg.lora.target_modules is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS
        from transformers import AutoConfig

        kind = AutoConfig.from_pretrained(local_model(cfg.model)).model_type
        if kind not in DEFAULT_TARGETS:
            raise UserError(
                f"LoRA: peft has no default target modules for {kind} models; set lora.target_modules "
                "(module names, or all-linear)"
            )
    if cfg.live_reference and absolute["live_reference"] != absolute["model"]:
        raise UserError(
            f"with LoRA the live reference is the base model with its adapters off, so live_reference "
            f"must be the model the run starts from ({cfg.model}), not {cfg.live_reference}"
        )


def fit(cfg: TrainConfig, console: Console | None = None) -> dict[str, Any]:
    """Run one training stage; returns the final metrics and where the model went."""
    if cfg.edpo_oracles:  # K runs, named by edpo_oracle_name: fit_oracles trains them one by one
        raise UserError("fit trains one model; train the e-DPO Oracles (edpo_oracles) with fit_oracles")
    console = console or Console(stderr=True)
    cfg, info = validate(cfg)
    pad = pad_id(cfg.model)
    ensure_ray()
    layout = RunLayout(cfg.run_dir).absolute()
    train_root = layout.train_root
    console.print(
        f"[bold]train {cfg.stage}[/]{' ' + cfg.loss if cfg.loss else ''}: {info.num_rows} rows, "
        f"{cfg.num_workers} workers x {cfg.micro_batch_size} x {cfg.grad_accum} accumulation, "
        f"{'DeepSpeed ZeRO-' + str(cfg.deepspeed.zero_stage) if cfg.deepspeed.enabled else 'torch DDP'}, "
        f"run {layout.train(cfg.run_name)}"
    )
    dataset = ray.data.read_parquet(info.path, columns=list(info.columns))
    if cfg.shuffle:
        dataset = dataset.random_shuffle(seed=cfg.seed)
    # The loop prints step, ETA and metrics; Ray Data's own bars for the shard feed would bury them.
    dataset.context.enable_progress_bars = False
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if cfg.use_gpu else {}) | cfg.resources_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, info, pad),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker=resources,
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=train_root,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(
            datasets_to_split="all", execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise UserError(
            f"training {cfg.name} failed after {cfg.max_failures} retries: {str(err).splitlines()[0]}"
        ) from err
    train_dir = layout.train(cfg.run_name)
    status_file = layout.train_status(cfg.run_name)
    metrics = storage.read_json(status_file) if storage.exists(status_file) else dict(result.metrics or {})
    if metrics.get("status") == "diverged":
        raise UserError(
            f"training {cfg.name} stopped: more than {cfg.max_bad_steps} non-finite losses in a row at step "
            f"{metrics.get('global_step')}; the last good checkpoint is {result.checkpoint.path if result.checkpoint else 'none'}"
        )
    summary = {
        "name": cfg.name,
        "model": model_dir(cfg),
        "metrics": metrics,
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "train_dir": train_dir,
    }
    console.print(f"model written to [bold]{summary['model']}[/]")
    return summary


def fit_oracles(cfg: TrainConfig, console: Console | None = None) -> list[dict[str, Any]]:
    """The Oracle stage: one Oracle (Eq. 4), or with ``edpo_oracles`` K the e-DPO Oracles: plain
    Bradley-Terry Oracles (Eq. 2, i.e. Eq. 4 with ``oracle_alpha`` 0) that differ only in their
    reward head's seed, named by :func:`~drdo_ray.artifacts.edpo_oracle_name` (as the pipeline's)."""
    if not cfg.edpo_oracles:
        return [fit(cfg, console)]
    base = cfg.name or "oracle"
    return [
        fit(
            cfg.model_copy(
                update={"edpo_oracles": 0, "name": edpo_oracle_name(base, k), **edpo_oracle_settings(k)}
            ),
            console,
        )
        for k in range(cfg.edpo_oracles)
    ]
