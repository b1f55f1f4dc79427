"""The `drdo-ray generate` command line of the generate tests (transformers and vLLM)."""

from __future__ import annotations

from pathlib import Path


def generate_argv(
    model: Path,
    data: Path,
    out: Path,
    *extra: str,
    temperatures: list[float],
    max_new_tokens: int,
    samples: int = 1,
    seed: int = 7,
    limit: int = 3,
) -> list[str]:
    return [
        "generate",
        "--model",
        str(model),
        "--prompts",
        str(data),
        "--out",
        str(out),
        "--temperatures",
        ",".join(map(str, temperatures)),
        "--top-p",
        "0.8",
        "--max-new-tokens",
        str(max_new_tokens),
        "--samples-per-prompt",
        str(samples),
        "--seed",
        str(seed),
        "--limit",
        str(limit),
        *extra,
    ]
