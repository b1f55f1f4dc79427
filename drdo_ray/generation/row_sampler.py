"""Batched sampling where every row draws from its own seeded random stream.

Hugging Face's sampler shares one RNG across the batch, so a row's text would depend on its
batch-mates. A ``torch.Generator`` per row fixes that but costs one sampling call per row and
step. Here the randomness is counter-based instead: the uniform number that row ``i`` uses at
decoding step ``t`` is ``splitmix64(seed_i, t)``, computed for the whole batch in one
vectorized call, and the token is drawn from it by inverse-CDF over the row's (temperature-
scaled, top-p-truncated) distribution. Sampling is then a handful of batched tensor ops per
step, and a seed gives the same text whatever else shares the batch, on any device.
No Ray, no transformers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GREEDY_BELOW = 1e-5  # temperatures under this decode greedily (vLLM's threshold too)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_uniforms(seeds: np.ndarray, step: int) -> np.ndarray:
    """One float64 in [0, 1) per seed for decoding step ``step``: a pure function of
    (seed, step), so a row's draws never depend on the other rows."""
    counter = _splitmix64(np.full(seeds.shape, step, dtype=np.uint64))
    bits = _splitmix64(seeds.astype(np.uint64) ^ counter)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class RowSampler:
    """Logits processor for ``model.generate``: samples each row with its own temperature,
    top-p and seed (temperature below ``GREEDY_BELOW``: argmax), optionally banning EOS per row. It returns scores
    that are 0 at the chosen token and -inf elsewhere, so generate() runs greedy and keeps the
    choice. Called once per decoding step."""

    def __init__(
        self,
        temperatures: Sequence[float],
        top_ps: Sequence[float],
        seeds: Sequence[int],
        *,
        ban_eos_rows: Sequence[int] = (),
        eos_ids: Sequence[int] = (),
    ) -> None:
        import torch

        self.temps = torch.tensor(list(temperatures), dtype=torch.float32)
        self.top_ps = torch.tensor(list(top_ps), dtype=torch.float32)
        self.seeds = np.array([s & (2**64 - 1) for s in seeds], dtype=np.uint64)
        self.ban_rows = list(ban_eos_rows)
        self.eos_ids = sorted(eos_ids)
        self.step = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float()
        device = scores.device
        if self.ban_rows and self.eos_ids:
            scores[torch.tensor(self.ban_rows)[:, None], torch.tensor(self.eos_ids)[None, :]] = float("-inf")
        temps = self.temps.to(device)
        greedy = scores.argmax(dim=-1)
        probs = torch.softmax(scores / temps.clamp_min(1e-6)[:, None], dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Nucleus: keep the smallest prefix whose mass reaches top_p (the top token always stays).
        outside = (sorted_p.cumsum(-1) - sorted_p) >= self.top_ps.to(device)[:, None]
        outside[:, 0] = False  # also when top_p rounds to 0 in float32 (5e-324): no row is left empty
        cdf = sorted_p.masked_fill(outside, 0.0).cumsum(-1)
        u = torch.from_numpy(row_uniforms(self.seeds, self.step)).to(device=device, dtype=cdf.dtype)
        self.step += 1
        # First kept token whose cumulative mass exceeds u * (kept mass); the clamp guards the
        # case where rounding puts the target on the total.
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None].contiguous(), right=True)
        kept = (~outside).sum(dim=-1, keepdim=True)
        sampled = order.gather(1, torch.minimum(pick, kept - 1)).squeeze(1)
        chosen = torch.where(temps < GREEDY_BELOW, greedy, sampled)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out
