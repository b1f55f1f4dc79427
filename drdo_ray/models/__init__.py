"""Policy / Oracle = causal LM + linear reward head; one-pass sequence log-probs; the
offline tiny tokenizer and model builder."""

from drdo_ray.models.logprobs import (
    PairOutput,
    SequenceOutput,
    collate_pairs,
    collate_sequences,
    pair_forward,
    sequence_forward,
    sequence_logps,
)
from drdo_ray.models.reward_head import (
    PolicyOutput,
    PolicyWithRewardHead,
    last_token_index,
    position_ids_from_mask,
    scale_grad,
)
from drdo_ray.models.tiny import build_tiny_model
from drdo_ray.models.tokenizer import default_corpus, train_tokenizer

__all__ = [
    "PairOutput",
    "PolicyOutput",
    "PolicyWithRewardHead",
    "SequenceOutput",
    "build_tiny_model",
    "collate_pairs",
    "collate_sequences",
    "default_corpus",
    "last_token_index",
    "pair_forward",
    "position_ids_from_mask",
    "scale_grad",
    "sequence_forward",
    "sequence_logps",
    "train_tokenizer",
]
