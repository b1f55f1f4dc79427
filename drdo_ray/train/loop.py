"""THE training loop: one per-worker function for SFT, the Oracle and every alignment loss.

No Ray import here. Ray Train calls it through ray_trainer.py with a dataset shard and a
reporter; a benchmark or a GPU check can call :func:`run` directly with any iterable of
collated batches. A stage differs only by its config: which model (with or without a reward
head), which batches (sequences or pairs) and which loss from ``drdo_ray.losses``."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ..artifacts import local_model
from ..attention import attn_kwargs
from ..config import TrainConfig
from ..models import PolicyWithRewardHead, pair_forward, sequence_forward
from ..models.lora import add_adapters, base_model, peft_model_of
from ..run_layout import TRAIN_STATUS_FILE
from .checkpoint import TrainerState, load_trainer_state, save_trainer_state
from .collectives import all_true
from .diagnostics import term_gradients_of, term_grads_apply
from .engine import Engine, World, build_engine, use_bf16
from .metrics import MetricsLog
from .row_trace import RowTrace
from .stage import call_loss, pair_tensors, reduction_of, spec_of, uses_reward_head
from .step_window import StepWindow

Batch = dict[str, torch.Tensor]


class Reporter(Protocol):
    """Where metrics and checkpoints go: Ray Train's ``report`` or a local folder."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


class NullReporter:
    """Reports nowhere: a direct call (benchmarks) keeps metrics in ``metrics_dir`` only."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        pass


class InjectedFailure(RuntimeError):
    """Raised once by ``fail_at_step`` to test recovery."""


# ------------------------------------------------------------------------------ stage logic


def score_columns(cfg: TrainConfig) -> tuple[str, ...]:
    """Precomputed columns the stage's loss reads from the dataset."""
    if cfg.stage != "align":
        return ()
    needed = spec_of(cfg).inputs
    if cfg.live_reference:
        needed = tuple(c for c in needed if not c.startswith("ref_"))
    return needed


def load_model(cfg: TrainConfig) -> nn.Module:
    """The model a stage trains, in train mode: the LM (with a reward head where the loss reads
    rewards), with LoRA adapters on the LM when ``lora.enabled``."""
    # float32 master weights whatever the checkpoint's dtype (transformers 5 loads "auto": a
    # float16 hub checkpoint would otherwise train in float16); autocast / DeepSpeed do bf16.
    attention = attn_kwargs(cfg.attn_implementation)
    if uses_reward_head(cfg):
        model = PolicyWithRewardHead.from_pretrained(
            local_model(cfg.model), head_seed=cfg.head_seed, torch_dtype=torch.float32, **attention
        )
        # Every loss here reads reward *differences*: the head's bias gets no gradient, so it is
        # frozen rather than left as a parameter the optimizer decays for nothing.
        model.reward_head.bias.requires_grad_(False)
        if cfg.stage == "align":
            # In DRDO only the distillation term reads the rewards, so scaling the gradient the
            # rewards send into the trunk scales exactly the distillation term's share of it.
            model.trunk_grad_scale = cfg.distill_trunk.scale
        if not spec_of(cfg).reads_logits:
            # Distillation alone reads rewards from hidden states, never the logits: an untied
            # output embedding gets no gradient (and would stall DDP waiting for one).
            output, inputs = model.lm.get_output_embeddings(), model.lm.get_input_embeddings()
            if output is not None and output.weight is not inputs.weight:
                output.requires_grad_(False)
    else:
        model = AutoModelForCausalLM.from_pretrained(local_model(cfg.model), dtype=torch.float32, **attention)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora.enabled:
        if isinstance(model, PolicyWithRewardHead):
            model.lm = add_adapters(model.lm, cfg.lora, seed=cfg.seed, base=cfg.model)
        else:
            model = add_adapters(model, cfg.lora, seed=cfg.seed, base=cfg.model)
    return model.train()


def _loss(
    cfg: TrainConfig, model: nn.Module, batch: Batch, reference: nn.Module | None, diagnose: bool = False
) -> tuple[torch.Tensor, dict]:
    """The micro-batch's loss and metrics, dispatched through ``losses.LOSS_SPECS``;
    ``diagnose`` adds the per-term trunk gradients (diagnostics.py) from the same forward pass."""
    if cfg.stage == "sft":
        # SFT's loss is the token-mean NLL whatever the configured reduction.
        out = sequence_forward(model, batch, reduction="mean", chunk_size=cfg.logps_chunk_size)
        return call_loss(cfg, {"chosen_logps": out.logps})
    reduction = reduction_of(cfg)
    pair = pair_forward(
        model, batch, reduction=reduction, chunk_size=cfg.logps_chunk_size, keep_hidden=diagnose
    )
    if reference is not None:
        with _reference_forward(reference) as frozen:
            ref = pair_forward(frozen, batch, reduction=reduction, chunk_size=cfg.logps_chunk_size)
        batch = {**batch, "ref_chosen_logps": ref.chosen_logps, "ref_rejected_logps": ref.rejected_logps}
    value, metrics = call_loss(cfg, pair_tensors(pair, batch))
    if diagnose:
        metrics |= term_gradients_of(pair, batch, cfg, model)
    return value, metrics


# ------------------------------------------------------------------------------ the loop


@dataclass
class Plan:
    steps_per_epoch: int
    total_steps: int


def plan(cfg: TrainConfig, num_rows: int, world_size: int) -> Plan:
    """Optimizer steps per epoch and in all. Each worker gets num_rows // world_size rows
    (an equal split); micro-batches past the last full accumulation window of an epoch are dropped."""
    per_step = cfg.micro_batch_size * cfg.grad_accum
    steps_per_epoch = (num_rows // world_size) // per_step
    if steps_per_epoch == 0:
        raise ValueError(
            f"{num_rows} rows over {world_size} workers cannot fill one optimizer step of "
            f"{per_step} rows per worker (micro_batch_size x grad_accum)"
        )
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    return Plan(steps_per_epoch, total)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


@contextlib.contextmanager
def _reference_forward(reference: nn.Module) -> Iterator[nn.Module]:
    """The reference for one forward pass: a LoRA policy with its adapters off, else the frozen
    reference model as it is."""
    if peft_model_of(reference) is not None:
        with base_model(reference) as frozen:
            yield frozen
    else:
        with torch.no_grad():
            yield reference


def load_reference(cfg: TrainConfig, world: World, policy: nn.Module) -> nn.Module | None:
    """The frozen reference of ``live_reference`` (DPO family), or None. With LoRA it is the
    policy itself (``policy``, unwrapped), read with its adapters off: the base model the run
    starts from, which the config checked is the live reference."""
    if not cfg.live_reference:
        return None
    if cfg.lora.enabled:
        return policy
    # Frozen, so no master copy is needed: bf16 weights when training in bf16. DeepSpeed does not
    # autocast, and an fp32 reference there ran 3x slower than the whole DRDO step (H200).
    dtype = torch.bfloat16 if use_bf16(cfg) else torch.float32
    reference = AutoModelForCausalLM.from_pretrained(
        local_model(cfg.live_reference), dtype=dtype, **attn_kwargs(cfg.attn_implementation)
    )
    return reference.to(world.device).eval().requires_grad_(False)


Outcome = Literal["stepped", "accumulated", "skipped", "diverged"]


@dataclass
class _Training:
    """What one worker's run holds while it trains: the engine, the reference, the resumable
    state and the step window."""

    cfg: TrainConfig
    engine: Engine
    reference: nn.Module | None
    world: World
    state: TrainerState
    window: StepWindow
    diagnose: bool
    trace: RowTrace

    def micro_batch(self, batch: Batch) -> Outcome:
        """Forward and backward of one micro-batch, and the optimizer step once ``grad_accum``
        of them have accumulated. A non-finite loss on any worker skips the micro-batch on all;
        more than ``max_bad_steps`` in a row: the run diverged."""
        cfg, state, world = self.cfg, self.state, self.world
        batch = _to_device(batch, world.device)
        rows = int(batch.pop("num_rows"))
        self.trace.add(state.global_step + 1, state.epoch, batch, rows)
        state.epoch_micro += 1
        state.consumed_samples += rows * world.size
        diagnose = self.diagnose and self.window.diagnose_due(state.global_step + 1)
        with self.engine.accumulate(), self.engine.autocast():
            loss, metrics = _loss(cfg, self.engine.module, batch, self.reference, diagnose=diagnose)
        if not all_true(bool(torch.isfinite(loss)), world):
            state.bad_steps += 1
            state.consecutive_bad += 1
            print(
                f"rank {world.rank}: non-finite loss at step {state.global_step}, micro-batch skipped "
                f"({state.consecutive_bad} in a row, {state.bad_steps} in all)",
                flush=True,
            )
            return "diverged" if state.consecutive_bad > cfg.max_bad_steps else "skipped"
        state.consecutive_bad = 0
        self.engine.backward(loss)
        self.window.add(metrics, int(batch["attention_mask"].sum()))
        if not self.engine.step():
            return "accumulated"
        state.global_step += 1
        self.window.step_done()
        return "stepped"

    def logged(self) -> dict[str, Any]:
        """The closed window's metrics with the step's learning rate, gradient norm and progress."""
        state = self.state
        return {
            **self.window.close(),
            "lr": self.engine.lr,
            "grad_norm": self.engine.grad_norm if self.engine.grad_norm is not None else math.nan,
            "epoch": state.epoch,
            "consumed_samples": state.consumed_samples,
            "bad_steps": state.bad_steps,
            "global_step": state.global_step,
        }

    def checkpoint(self, reporter: Reporter, metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="drdo-ckpt-") as tmp:
            directory = Path(tmp)
            self.engine.save(directory)
            save_trainer_state(directory, self.state, self.world.rank)
            reporter.report(metrics, directory)


def _inject_failure(cfg: TrainConfig, step: int, world: World, marker: Path | None) -> None:
    """``fail_at_step``: raise once, on the last rank, at that step (the marker remembers)."""
    if (
        cfg.fail_at_step == step
        and world.rank == world.size - 1
        and marker is not None
        and not marker.exists()
    ):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"failed once at step {step}\n")
        raise InjectedFailure(f"injected failure at step {step} on rank {world.rank}")


def run(
    cfg: TrainConfig,
    *,
    batches: Callable[[int], Iterable[Batch]],
    num_rows: int,
    world: World,
    reporter: Reporter | None = None,
    restore_dir: Path | None = None,
    metrics_dir: Path | None = None,
    export: Callable[[nn.Module, Engine], None] | None = None,
    failure_marker: Path | None = None,
) -> dict[str, Any]:
    """Train until ``total_steps`` optimizer steps. ``batches(epoch)`` yields this worker's
    collated micro-batches for an epoch in a deterministic order, so a restart can skip the
    ``epoch_micro`` already consumed. Returns the last logged metrics plus the run status."""
    reporter = reporter if reporter is not None else NullReporter()
    torch.manual_seed(cfg.seed + world.rank)
    steps = plan(cfg, num_rows, world.size)
    engine = build_engine(load_model(cfg), cfg, world, steps.total_steps)
    state = TrainerState()
    if restore_dir is not None:
        engine.load(restore_dir)
        state = load_trainer_state(restore_dir, world.rank)
    window = StepWindow(cfg, steps.total_steps, world)
    traced = metrics_dir / f"rows-rank-{world.rank}.jsonl" if cfg.trace_rows and metrics_dir else None
    trace = RowTrace(traced, state.global_step)
    reference = load_reference(cfg, world, engine.unwrapped)
    training = _Training(cfg, engine, reference, world, state, window, term_grads_apply(cfg), trace)
    log = _metrics_log(metrics_dir, steps.total_steps, state.global_step, world)
    last: dict[str, Any] = {}
    status = "finished"
    while state.global_step < steps.total_steps and status == "finished":
        for index, batch in enumerate(batches(state.epoch)):
            if index < state.epoch_micro:
                continue  # consumed before the restart
            outcome = training.micro_batch(batch)
            if outcome == "diverged":
                status = "diverged"
                break
            if outcome != "stepped":
                continue
            step = state.global_step
            _inject_failure(cfg, step, world, failure_marker)
            if window.log_due(step):
                last = training.logged()
                log.log(step, last)
                # Ray Train hears from the loop only with a checkpoint: each report is a barrier across
                # workers plus a hand-off to the controller (~2 s a call on Ray 2.60), which per step
                # made a 0.25 s step 8x slower. Per-step metrics go to metrics.jsonl/TensorBoard.
                if window.checkpoint_due(step):
                    training.checkpoint(reporter, last)
            if step >= steps.total_steps:
                break
        else:
            state.epoch += 1
            state.epoch_micro = 0
    return _finish(training, status, last, log, reporter, export)


def _metrics_log(metrics_dir: Path | None, total_steps: int, start_step: int, world: World) -> MetricsLog:
    """Rank 0's metrics.jsonl (and TensorBoard) in ``metrics_dir``; on resume, without the rows
    logged after the checkpoint (they are redone)."""
    log = MetricsLog(
        metrics_dir or Path(tempfile.mkdtemp()),
        total_steps=total_steps,
        start_step=start_step,
        enabled=world.rank == 0 and metrics_dir is not None,
    )
    if log.enabled:
        _truncate_metrics(log.path, start_step)
    return log


def _finish(
    training: _Training,
    status: str,
    last: dict[str, Any],
    log: MetricsLog,
    reporter: Reporter,
    export: Callable[[nn.Module, Engine], None] | None,
) -> dict[str, Any]:
    """Export a finished run's model, record the outcome (RUN/train/<name>/status.json) and
    report it."""
    if status == "finished" and export is not None:
        with training.engine.export() as model:
            export(model, training.engine)
    state = training.state
    final = {
        **last,
        "status": status,
        "global_step": state.global_step,
        "consumed_samples": state.consumed_samples,
        "bad_steps": state.bad_steps,
    }
    if log.enabled:
        # Ray Train keeps the metrics of the last checkpoint; the run's outcome is this file.
        (log.path.parent / TRAIN_STATUS_FILE).write_text(json.dumps(final, indent=2) + "\n")
    log.close()
    reporter.report(final, None)
    return final


def _truncate_metrics(path: Path, keep_through: int) -> None:
    """On resume, drop rows logged after the checkpoint we resumed from: they are redone."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line and json.loads(line).get("step", 0) <= keep_through
    ]
    path.write_text("".join(line + "\n" for line in kept))
