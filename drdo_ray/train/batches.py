"""Ray Data batches (dicts of numpy arrays) -> model-ready tensors. Pure: no Ray import, so
the same collator serves the Ray loop, a direct call and tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..models import collate_pairs, collate_sequences


def _lists(column: Any) -> list[list[int]]:
    return [list(map(int, ids)) for ids in column]


class Collator:
    """``pairs=True``: prompt + chosen and prompt + rejected in one batch (chosen rows first);
    otherwise prompt + chosen only (SFT). Score columns named in ``extra`` ride along as
    float32 tensors; ``oracle_chosen_k`` columns stack into (K, B) ``oracle_chosen``."""

    def __init__(
        self,
        *,
        pad_id: int,
        pairs: bool,
        extra: Sequence[str] = (),
        edpo_oracles: int = 0,
        padding_side: str = "right",
    ) -> None:
        self.pad_id = pad_id
        self.pairs = pairs
        self.extra = tuple(extra)
        self.edpo_oracles = edpo_oracles
        self.padding_side = padding_side

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        prompts = _lists(batch["prompt_ids"])
        if self.pairs:
            out = collate_pairs(
                prompts,
                _lists(batch["chosen_ids"]),
                _lists(batch["rejected_ids"]),
                pad_id=self.pad_id,
                padding_side=self.padding_side,
            )
        else:
            out = collate_sequences(
                prompts, _lists(batch["chosen_ids"]), pad_id=self.pad_id, padding_side=self.padding_side
            )
        for name in self.extra:
            if self.edpo_oracles and name in ("oracle_chosen", "oracle_rejected"):
                members = [
                    np.asarray(batch[f"{name}_{k}"], dtype=np.float32) for k in range(self.edpo_oracles)
                ]
                out[name] = torch.from_numpy(np.stack(members))
            else:
                out[name] = torch.from_numpy(np.asarray(batch[name], dtype=np.float32))
        out["num_rows"] = torch.tensor(len(prompts))
        return out
