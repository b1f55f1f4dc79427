"""LoRA adapters through peft (the ``lora`` settings of every training stage): adapters on a
causal LM with its base weights frozen, the base model seen through the same module with the
adapters off (a live reference without a second copy), checkpoints of what trains, and the
exported folder: the adapters merged into the base weights, or the adapters alone.

A :class:`~drdo_ray.models.PolicyWithRewardHead` keeps its LM in ``.lm``: the adapters go there
and the reward head beside them stays a plain, fully trainable ``nn.Linear``. peft is imported
only when LoRA is on (the ``lora`` extra)."""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..config import LoraSettings


def peft_model_of(model: nn.Module) -> Any | None:
    """The peft model inside ``model`` (itself, or a policy's ``.lm``), or None without adapters."""
    peft = sys.modules.get("peft")
    lm = getattr(model, "lm", model)
    return lm if peft is not None and isinstance(lm, peft.PeftModel) else None


def add_adapters(lm: PreTrainedModel, settings: LoraSettings, *, seed: int, base: str) -> Any:
    """``lm`` wrapped with fresh adapters (a ``PeftModelForCausalLM``), its own weights frozen.
    The adapters' initial values come from ``seed`` alone, so every rank draws the same ones;
    ``base`` (the model the run starts from, as given) is what an adapters-only folder names."""
    from peft import LoraConfig, get_peft_model

    target: list[str] | str | None = settings.target_modules
    if target == ["all-linear"]:
        target = "all-linear"
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(lm, config)
    model.peft_config["default"].base_model_name_or_path = base
    if getattr(lm, "is_gradient_checkpointing", False):
        # The frozen embeddings' outputs need a gradient for checkpointed blocks to backpropagate.
        lm.enable_input_require_grads()
    return model


@contextlib.contextmanager
def base_model(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` as its base: adapters off, eval mode (no dropout), no gradient; restored after.
    The live reference of a LoRA run, read from the weights the policy already holds."""
    peft = peft_model_of(model)
    if peft is None:
        raise ValueError("base_model: the model has no LoRA adapters")
    training = model.training
    model.eval()
    try:
        with peft.disable_adapter(), torch.no_grad():
            yield model
    finally:
        model.train(training)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (adapters, reward head): a LoRA checkpoint holds only these;
    the frozen base comes back from the model folder the run starts from."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`trainable_state` into a model built the same way; anything else is an error."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    absent = sorted(trainable & set(missing))
    if unexpected or absent:
        raise RuntimeError(
            f"the checkpoint does not match the model's adapters: unexpected {sorted(unexpected)[:5]}, "
            f"missing {absent[:5]}"
        )


def merged_lm(model: nn.Module, base: str) -> PreTrainedModel:
    """A plain transformers LM: ``base`` (a local folder or hub id) loaded afresh in float32 on CPU
    with ``model``'s adapters merged into its weights. The merge happens in float32 whatever the
    training precision, and the live model is left as it is (under ZeRO-3 its gathered weights)."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    peft = peft_model_of(model)
    if peft is None:
        raise ValueError("merged_lm: the model has no LoRA adapters")
    adapters = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(peft).items()}
    fresh = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    wrapped = get_peft_model(fresh, copy.deepcopy(peft.peft_config["default"]))
    result = set_peft_model_state_dict(wrapped, adapters)
    if result.unexpected_keys:
        raise RuntimeError(f"adapters that fit no module of {base}: {result.unexpected_keys[:5]}")
    return wrapped.merge_and_unload()


def save_adapters(model: nn.Module, out: Path) -> None:
    """The adapters alone: adapter_config.json (naming the base model) + adapter_model.safetensors,
    which peft, and transformers with peft installed, load on top of the base."""
    peft = peft_model_of(model)
    if peft is None:
        raise ValueError("save_adapters: the model has no LoRA adapters")
    peft.save_pretrained(out)
