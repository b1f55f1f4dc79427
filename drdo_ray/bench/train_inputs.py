"""What `bench train` feeds the loop: a model (a folder, the tiny model, or a random-init model
of a known shape), tokenized pairs (shipped Ultrafeedback rows or fixed-length synthetic ones),
Oracle scores and reference log-probs, and the FLOP count that turns a step time into MFU.
No Ray import: this runs on a bare GPU machine."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.sources import SOURCES, sample_path
from ..models import pair_forward
from ..train.batches import Collator

# Random-init OPT shapes (the paper's Ultrafeedback models), built from a config: no download.
SHAPES: dict[str, dict[str, int]] = {
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12),
    "opt-350m": dict(
        hidden_size=1024, num_hidden_layers=24, ffn_dim=4096, num_attention_heads=16, word_embed_proj_dim=512
    ),
    "opt-1.3b": dict(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32),
    "opt-2.7b": dict(hidden_size=2560, num_hidden_layers=32, ffn_dim=10240, num_attention_heads=32),
}

# Dense bf16 peak per device, FLOP/s (vendor figures), for MFU.
PEAK_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "H20": 148e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L4": 121e12,
    "L40S": 362e12,
}


def build_shaped_model(shape: str, out_dir: Path) -> str:
    """A random-init OPT of a paper shape, saved in bf16 (the loop loads float32 masters)."""
    from transformers import AutoModelForCausalLM, OPTConfig

    dims = SHAPES[shape]
    config = OPTConfig(
        vocab_size=50272,
        max_position_embeddings=2048,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        word_embed_proj_dim=dims.get("word_embed_proj_dim", dims["hidden_size"]),
        **{k: v for k, v in dims.items() if k != "word_embed_proj_dim"},
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    return str(out_dir)


def sample_columns(model: str, rows: int) -> dict[str, list[Any]]:
    """Shipped Ultrafeedback rows, tokenized with the model's tokenizer and chat template."""
    from transformers import AutoTokenizer

    from ..data.tokenize import encode_prompt, encode_response

    tok = AutoTokenizer.from_pretrained(model)
    source = SOURCES["ultrafeedback"]
    lines = sample_path(source).read_text().splitlines()
    records = [source.normalize(json.loads(lines[i % len(lines)]), None) for i in range(rows)]
    return {
        "prompt_ids": [encode_prompt(tok, r["prompt"], chat=True) for r in records],
        "chosen_ids": [encode_response(tok, r["chosen"]) for r in records],
        "rejected_ids": [encode_response(tok, r["rejected"]) for r in records],
        "text": [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records],
    }


def synthetic_columns(vocab_size: int, rows: int, seq_len: int, seed: int = 0) -> dict[str, list[Any]]:
    """Random token rows of exactly ``seq_len`` tokens per sequence (half prompt, half response):
    no padding, so step time and MFU measure the model at that shape."""
    rng = np.random.default_rng(seed)
    prompt = seq_len // 2

    def ids(n: int) -> list[list[int]]:
        return rng.integers(3, vocab_size, size=(rows, n)).tolist()

    return {
        "prompt_ids": ids(prompt),
        "chosen_ids": ids(seq_len - prompt),
        "rejected_ids": ids(seq_len - prompt),
    }


def add_scores(cols: dict[str, list[Any]], rows: int, edpo_oracles: int = 3, seed: int = 0) -> None:
    """Oracle rewards (the one Oracle and K e-DPO Oracles) drawn with chosen ahead on average."""
    rng = np.random.default_rng(seed)
    cols["oracle_chosen"], cols["oracle_rejected"] = (
        list(rng.normal(0.5, 1, rows)),
        list(rng.normal(-0.5, 1, rows)),
    )
    for k in range(edpo_oracles):
        cols[f"oracle_chosen_{k}"] = list(rng.normal(0.5, 1, rows))
        cols[f"oracle_rejected_{k}"] = list(rng.normal(-0.5, 1, rows))


def add_reference_logps(
    cols: dict[str, list[Any]], model: str, pad_id: int, batch: int, chunk_size: int | None
) -> None:
    """Sum log-probs of the starting model, as `drdo-ray score` precomputes them: random values
    would saturate the DPO loss and send denormal floats through its backward pass."""
    from transformers import AutoModelForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(device).eval()
    collate = Collator(pad_id=pad_id, pairs=True)
    chosen: list[float] = []
    rejected: list[float] = []
    rows = len(cols["prompt_ids"])
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, rows, batch):
            collated = collate(
                {
                    k: np.array(cols[k][i : i + batch], dtype=object)
                    for k in ("prompt_ids", "chosen_ids", "rejected_ids")
                }
            )
            collated.pop("num_rows")
            out = pair_forward(
                reference,
                {k: v.to(device) for k, v in collated.items()},
                reduction="sum",
                chunk_size=chunk_size,
            )
            chosen += out.chosen_logps.tolist()
            rejected += out.rejected_logps.tolist()
    cols["ref_chosen_logps"], cols["ref_rejected_logps"] = chosen, rejected
    del reference
    if device.type == "cuda":
        torch.cuda.empty_cache()


def model_dims(model: str) -> dict[str, int]:
    """Matmul parameters (every nn.Linear weight, the LM head included once) and the layer
    count and width that the attention FLOP term needs."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for m in skeleton.modules() if isinstance(m, nn.Linear))
    text = config.get_text_config()
    return {
        "matmul_params": int(linear),
        "layers": int(text.num_hidden_layers),
        "width": int(text.hidden_size),
    }


def step_flops(lengths: list[int], dims: dict[str, int], *, forward_only_passes: int = 0) -> float:
    """Training FLOPs of one step over sequences of these real lengths: 6·N·T for the matmuls
    plus 12·L·d·T² for attention scores and values (forward + backward), and 2·N·T + 4·L·d·T²
    for each extra forward-only pass (a live reference model)."""
    n, layers, width = dims["matmul_params"], dims["layers"], dims["width"]
    per_pass = sum(2 * n * t + 4 * layers * width * t * t for t in lengths)
    return per_pass * (3 + forward_only_passes)


def device_peak(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    return next(
        (flops for key, flops in sorted(PEAK_BF16.items(), key=lambda kv: -len(kv[0])) if key in name), None
    )


def temp_dir(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"drdo-bench-{tag}-"))
