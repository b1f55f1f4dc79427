"""Policy (and Oracle) = any causal LM + a linear reward head on the last real token.

One class serves both roles: the DRDO policy trains LM and head together; the Oracle is the
same module trained with the Oracle loss, then frozen (:meth:`PolicyWithRewardHead.freeze`)
and used only to score. The head adds ``hidden + 1`` parameters and is dropped at export.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PreTrainedModel

HEAD_WEIGHTS = "reward_head.safetensors"
HEAD_CONFIG = "reward_head.json"


@dataclass
class PolicyOutput:
    logits: Tensor  # (B, T, V), the LM's dtype; (B, k, V) with logits_to_keep=k
    rewards: Tensor  # (B,), float32
    hidden_states: tuple[Tensor, ...] | None = None  # only when asked for (chunked log-probs)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the same positions
    as its unpadded self (pads get 0; their outputs are never read)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last position where ``attention_mask == 1``, per row; right, left or no
    padding alike (0 for an all-pad row)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """Identity in the forward pass whose backward multiplies the incoming gradient by ``factor``.

    The value returned is bit-identical to ``x`` (``x.detach() + (x - x.detach()) * factor`` adds
    an exact zero), so whatever reads it (the reward head) computes exactly what it would from
    ``x`` and gets exactly the same parameter gradients; only the gradient that flows back
    *through* it into ``x`` (the LM trunk) is scaled. ``factor == 0`` is a plain ``detach()``
    (no graph at all behind the result), ``factor == 1`` returns ``x`` itself.
    """
    if not (factor >= 0 and math.isfinite(factor)):
        raise ValueError(f"scale_grad: factor must be a finite number >= 0, got {factor!r}")
    if factor == 1.0:
        return x
    if factor == 0.0:
        return x.detach()
    frozen = x.detach()
    return frozen + (x - frozen) * factor


class RewardHead(nn.Linear):
    """``nn.Linear(hidden, 1)`` that computes in float32 even where DeepSpeed's bf16 mode cast its
    parameters down, outside any autocast region: the reward arithmetic is always fp32. Called as
    a module (not its weight read directly), so ZeRO-3 gathers its partitioned parameters for the
    forward and the backward pass."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float(), self.bias.float())


class PolicyWithRewardHead(nn.Module):
    """``self.lm``: an ``AutoModelForCausalLM``; ``self.reward_head``: ``nn.Linear(hidden, 1)``
    read at the final hidden state (the one ``lm_head`` sees) of the last non-pad token.

    Head init: weight ~ N(0, 1/sqrt(hidden+1)) (the reward-model init of Stiennon et al.),
    bias 0, drawn from ``torch.manual_seed(head_seed)`` in a forked RNG. Zeros would make
    every head identical, and e-DPO's Oracle ensemble differs only by ``head_seed``.

    ``trunk_grad_scale`` (an attribute, settable at any time; 1.0 by default) multiplies the
    gradient the rewards send back into the LM through the head's input (:func:`scale_grad`):
    0.0 trains the head alone on the rewards' losses, the LM getting no gradient from them.
    Rewards and the head's own gradient do not depend on it.
    """

    def __init__(self, lm: PreTrainedModel, *, head_seed: int = 0, trunk_grad_scale: float = 1.0) -> None:
        super().__init__()
        self.lm = lm
        self.trunk_grad_scale = trunk_grad_scale
        hidden = self._hidden_size(lm)
        # The head lives in float32 whatever the LM's dtype: rewards are regressed onto Oracle
        # reward *differences* (a squared loss), and at lr ~5e-6 a bf16 weight would round
        # most updates away (bf16 keeps 8 mantissa bits).
        device = next(lm.parameters()).device
        self.reward_head = RewardHead(hidden, 1, device=device, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            weight = torch.randn(1, hidden, dtype=torch.float32) / math.sqrt(hidden + 1)
        with torch.no_grad():
            self.reward_head.weight.copy_(weight)
            self.reward_head.bias.zero_()
        # Some architectures (e.g. ALiBi models) take no position_ids; only pass them if accepted.
        self._lm_takes_position_ids = "position_ids" in inspect.signature(lm.forward).parameters
        # Mirror the LM's mode: from_pretrained returns an eval-mode model, as transformers does.
        self.train(lm.training)

    @staticmethod
    def _hidden_size(lm: PreTrainedModel) -> int:
        # lm_head.in_features is the width of the states the LM actually emits (OPT-350m
        # projects 1024 -> 512 before lm_head); config.hidden_size is the fallback.
        out_emb = lm.get_output_embeddings()
        if isinstance(out_emb, nn.Linear):
            return out_emb.in_features
        return lm.config.get_text_config().hidden_size

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def hidden_size(self) -> int:
        return self.reward_head.in_features

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
    ) -> PolicyOutput:
        """``logits_to_keep``/``output_hidden_states`` as in transformers: chunked log-probs
        skip the full (B, T, V) logits and project the final hidden states themselves."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        kwargs: dict[str, Any] = {"position_ids": position_ids} if self._lm_takes_position_ids else {}
        # One LM pass: logits exactly as the model computes them (softcapping, scaling and all)
        # plus the final hidden states. Transformers 5 ties hidden_states[-1] to the
        # post-final-norm last_hidden_state, i.e. what lm_head reads; the tuple only holds
        # references to activations autograd keeps anyway.
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
            return_dict=True,
            **kwargs,
            **({"logits_to_keep": logits_to_keep} if logits_to_keep else {}),
        )
        hidden = out.hidden_states[-1]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = scale_grad(hidden[rows, last_token_index(attention_mask)], self.trunk_grad_scale)
        rewards = self.reward_head(last).squeeze(-1)
        return PolicyOutput(
            logits=out.logits,
            rewards=rewards,
            hidden_states=out.hidden_states if output_hidden_states else None,
        )

    # ----------------------------------------------------------------------------- I/O

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike[str],
        *,
        head_seed: int = 0,
        torch_dtype: torch.dtype | str | None = None,
        **lm_kwargs: Any,
    ) -> PolicyWithRewardHead:
        """Load the LM with ``AutoModelForCausalLM`` (``lm_kwargs`` passed through) and the head
        from ``reward_head.safetensors`` beside it if present; otherwise a fresh head seeded by
        ``head_seed`` (an SFT model or hub checkpoint has none). Returned in eval mode, like
        any transformers ``from_pretrained``: call ``.train()`` before training."""
        if torch_dtype is not None:
            lm_kwargs.setdefault("dtype", torch_dtype)  # transformers 5 renamed torch_dtype
        lm = AutoModelForCausalLM.from_pretrained(path_or_hub_id, **lm_kwargs)
        model = cls(lm, head_seed=head_seed)
        head_file = _find_head_file(path_or_hub_id, lm_kwargs)
        if head_file is not None:
            model.load_head(head_file)
        return model

    def load_head(self, path: str | os.PathLike[str]) -> None:
        """Load head weights from a ``reward_head.safetensors`` file (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / HEAD_WEIGHTS
        state = load_file(str(path))
        if state["weight"].shape != self.reward_head.weight.shape:
            raise ValueError(
                f"reward head in {path} has shape {tuple(state['weight'].shape)}, "
                f"expected {tuple(self.reward_head.weight.shape)}"
            )
        with torch.no_grad():
            self.reward_head.weight.copy_(state["weight"])
            self.reward_head.bias.copy_(state["bias"])

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        tokenizer: Any = None,
        lm: PreTrainedModel | None = None,
        **lm_kwargs: Any,
    ) -> Path:
        """The LM's Hugging Face folder plus ``reward_head.safetensors`` (float32) and
        ``reward_head.json`` beside it; the tokenizer too when given (``lm``: see export_policy)."""
        out = self.export_policy(save_directory, tokenizer=tokenizer, lm=lm, **lm_kwargs)
        state = {
            "weight": self.reward_head.weight.detach().float().cpu().contiguous(),
            "bias": self.reward_head.bias.detach().float().cpu().contiguous(),
        }
        save_file(state, str(out / HEAD_WEIGHTS), metadata={"format": "pt"})
        meta = {"hidden_size": self.hidden_size, "out_features": 1, "dtype": "float32"}
        (out / HEAD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    def export_policy(
        self,
        save_directory: str | os.PathLike[str],
        *,
        tokenizer: Any = None,
        lm: PreTrainedModel | None = None,
        **lm_kwargs: Any,
    ) -> Path:
        """Only the LM (the deployable policy): no head files. Stale head files from an earlier
        checkpoint in the same folder are removed so the export cannot be mistaken for one.
        ``lm`` is written in place of ``self.lm`` when given (its LoRA adapters merged)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in (HEAD_WEIGHTS, HEAD_CONFIG):
            (out / name).unlink(missing_ok=True)
        (lm if lm is not None else self.lm).save_pretrained(out, **lm_kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        return out

    # ------------------------------------------------------------------------- helpers

    def freeze(self) -> PolicyWithRewardHead:
        """Oracle use: no gradients, eval mode. Returns self."""
        self.requires_grad_(False)
        self.eval()
        return self

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.lm.gradient_checkpointing_enable(**kwargs)

    def num_head_parameters(self) -> int:
        return sum(p.numel() for p in self.reward_head.parameters())


def _find_head_file(path_or_hub_id: str | os.PathLike[str], lm_kwargs: dict[str, Any]) -> str | None:
    local = Path(path_or_hub_id)
    subfolder = lm_kwargs.get("subfolder") or ""
    if local.is_dir():
        candidate = local / subfolder / HEAD_WEIGHTS
        return str(candidate) if candidate.is_file() else None
    # A hub repo may carry a head (e.g. a pushed Oracle); absence or no network means "none".
    try:
        from transformers.utils import cached_file

        hub_keys = ("revision", "subfolder", "cache_dir", "token", "local_files_only")
        return cached_file(
            str(path_or_hub_id),
            HEAD_WEIGHTS,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **{k: lm_kwargs[k] for k in hub_keys if k in lm_kwargs},
        )
    except OSError:
        return None
