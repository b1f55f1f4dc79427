"""The engine a worker trains on: DeepSpeed (ZeRO 0-3, bf16) or plain torch (DDP when there
is more than one worker). Both present the same small surface to the loop: forward through
``module``, ``backward(loss)``, ``step()`` (True on an optimizer step), ``save``/``load``,
``export`` (full weights on rank 0, ZeRO-3 gathered). Gradient accumulation, clipping and the
learning-rate schedule live here, not in the loop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import TrainConfig
from ..models.lora import load_trainable_state, trainable_state
from .schedule import warmup_cosine


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.size > 1 and dist.is_available() and dist.is_initialized()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D parameters), as usual for transformers.
    An empty group is left out (LoRA trains no 1-D parameter): DeepSpeed's ZeRO drops it, and
    the schedule, built on the groups given, would then count one group too many."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def _optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the trainable parameters, built here for both engines (DeepSpeed
    takes it as it is): torch's AdamW, or bitsandbytes' PagedAdamW32bit (CUDA only; the config
    refuses it elsewhere)."""
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "paged_adamw_32bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW32bit(groups, lr=cfg.lr, betas=cfg.adam_betas)
    # DeepSpeed's own CPU Adam needs a 40 s build and its fused CUDA Adam a compiler; torch's
    # fused AdamW is as fast on GPU.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, fused=device.type == "cuda")


def _scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    fn = partial(
        warmup_cosine, total_steps=total_steps, warmup_steps=cfg.warmup_steps, min_lr_ratio=cfg.min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def use_bf16(cfg: TrainConfig) -> bool:
    return cfg.bf16 if cfg.bf16 is not None else cfg.use_gpu


class TorchEngine:
    """Plain PyTorch: fp32 master weights, bf16 autocast where asked, DDP across workers."""

    kind = "torch"

    def __init__(self, model: nn.Module, cfg: TrainConfig, world: World, total_steps: int) -> None:
        self.cfg = cfg
        self.world = world
        self.unwrapped = model.to(world.device)
        self.optimizer = _optimizer(model, cfg, world.device)
        self.scheduler = _scheduler(self.optimizer, cfg, total_steps)
        self.module: nn.Module = model
        if world.distributed:
            ids = [world.local_rank] if world.device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.bf16 = use_bf16(cfg)
        self.micro = 0
        self.grad_norm: float | None = None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        with torch.autocast(self.world.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            yield

    def _boundary(self) -> bool:
        return (self.micro + 1) % self.cfg.grad_accum == 0

    @contextlib.contextmanager
    def accumulate(self) -> Iterator[None]:
        """Skip DDP's gradient all-reduce on micro-batches that do not end an accumulation window."""
        if isinstance(self.module, nn.parallel.DistributedDataParallel) and not self._boundary():
            with self.module.no_sync():
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.grad_accum).backward()

    def step(self) -> bool:
        stepped = self._boundary()
        self.micro += 1
        if stepped:
            norm = torch.nn.utils.clip_grad_norm_(self.unwrapped.parameters(), self.cfg.max_grad_norm)
            self.grad_norm = float(norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return stepped

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, directory: Path) -> None:
        # DDP replicas are identical: rank 0 writes the one copy.
        if self.world.rank == 0:
            torch.save(
                {
                    # LoRA: the adapters and the head; the frozen base comes from the model folder.
                    "model": trainable_state(self.unwrapped)
                    if self.cfg.lora.enabled
                    else self.unwrapped.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "micro": self.micro,
                },
                directory / "torch_state.pt",
            )

    def load(self, directory: Path) -> None:
        state = torch.load(directory / "torch_state.pt", map_location=self.world.device, weights_only=False)
        if self.cfg.lora.enabled:
            load_trainable_state(self.unwrapped, state["model"])
        else:
            self.unwrapped.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]

    @contextlib.contextmanager
    def export(self) -> Iterator[nn.Module]:
        yield self.unwrapped


class DeepSpeedEngine:
    """DeepSpeed with the torch optimizer passed in; ZeRO stage, buckets and bf16 from config."""

    kind = "deepspeed"

    def __init__(self, model: nn.Module, cfg: TrainConfig, world: World, total_steps: int) -> None:
        import deepspeed

        self.cfg = cfg
        self.world = world
        self.bf16 = use_bf16(cfg)
        ds = cfg.deepspeed
        zero: dict[str, Any] = {"stage": ds.zero_stage}
        if ds.zero_stage > 0:
            zero.update(
                overlap_comm=ds.overlap_comm,
                contiguous_gradients=True,
                reduce_bucket_size=ds.reduce_bucket_size,
                allgather_bucket_size=ds.allgather_bucket_size,
            )
        config = {
            "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
            "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": cfg.max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": self.bf16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        model = model.to(world.device)
        optimizer = _optimizer(model, cfg, world.device)
        scheduler = _scheduler(optimizer, cfg, total_steps)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=config,
            dist_init_required=False,
        )
        self.module = self.engine
        self.unwrapped = self.engine.module
        self.grad_norm: float | None = None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        yield  # DeepSpeed's bf16 mode casts the module itself

    @contextlib.contextmanager
    def accumulate(self) -> Iterator[None]:
        yield  # DeepSpeed reduces gradients at the accumulation boundary by itself

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> bool:
        before = self.engine.global_steps
        self.engine.step()
        stepped = self.engine.global_steps > before
        if stepped:
            norm = self.engine.get_global_grad_norm()
            self.grad_norm = None if norm is None else float(norm)
        return stepped

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, directory: Path) -> None:
        # Every rank writes its own ZeRO partition; Ray Train merges the workers' folders. LoRA:
        # the frozen base is left out (it comes back from the model folder).
        self.engine.save_checkpoint(
            str(directory), tag="deepspeed", exclude_frozen_parameters=self.cfg.lora.enabled
        )

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(directory),
            tag="deepspeed",
            load_module_strict=not self.cfg.lora.enabled,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise RuntimeError(f"no DeepSpeed checkpoint under {directory}")

    @contextlib.contextmanager
    def export(self) -> Iterator[nn.Module]:
        """Full weights on every rank (ZeRO-3 gathers its partitions; all ranks must enter)."""
        if self.cfg.deepspeed.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.unwrapped.parameters()), modifier_rank=None):
                yield self.unwrapped
        else:
            yield self.unwrapped


Engine = TorchEngine | DeepSpeedEngine


def build_engine(model: nn.Module, cfg: TrainConfig, world: World, total_steps: int) -> Engine:
    cls = DeepSpeedEngine if cfg.deepspeed.enabled else TorchEngine
    return cls(model, cfg, world, total_steps)
