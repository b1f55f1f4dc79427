"""Reading generation sample sets (the output of `drdo-ray generate`) and pairing two of them.

Contract (written by ``drdo_ray/generation/sampling.py``):

    GEN/samples.jsonl | GEN/samples.parquet   one row per sample: prompt_id, prompt, chat,
                                              reference, model, temperature, sample_idx, text,
                                              num_tokens, finish_reason
    GEN/generation.json                       model, temperatures, top_p, max_new_tokens, seed,
                                              prompts, ...

Pairs are matched on ``(prompt_id, temperature, sample_idx)``; ``B = "reference"`` pairs every
A sample with its prompt's reference (human) response instead. Pure pandas: no Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd

from .. import storage
from ..errors import UserError
from ..generation.sampling_params import temperature_id

REQUIRED_COLUMNS = ("prompt_id", "prompt", "chat", "temperature", "sample_idx", "text")
OPTIONAL_COLUMNS = {"reference": None, "model": None, "num_tokens": None, "finish_reason": None}
KEY = ["prompt_id", "temperature", "sample_idx"]
REFERENCE = "reference"
SAMPLE_FILES = ("samples.jsonl", "samples.parquet")


@dataclass
class SampleSet:
    """One generation output: its rows (a DataFrame with every contract column) and metadata."""

    path: str
    rows: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    file: str = ""  # the samples file read (path may name its folder)

    def describe(self) -> dict[str, Any]:
        """What a result file records about this side of a comparison."""
        return {
            "name": self.name,
            "samples": self.path,
            "rows": len(self.rows),
            "generation": self.meta or None,
        }


def _find(path: str) -> tuple[str, str]:
    """(samples file, folder) for GEN given as a folder or as the samples file itself."""
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(root):
        raise UserError(f"sample set not found: {path}")
    if fs.isdir(root):
        for name in SAMPLE_FILES:
            if fs.exists(f"{root.rstrip('/')}/{name}"):
                return storage.join(path, name), path
        raise UserError(f"{path} holds no {' or '.join(SAMPLE_FILES)}; run drdo-ray generate first")
    if not path.endswith((".jsonl", ".parquet")):
        raise UserError(f"{path}: expected a generation folder or a .jsonl/.parquet samples file")
    return path, path.rsplit("/", 1)[0] if "/" in path else "."


def _read_table(file: str) -> pd.DataFrame:
    fs, root = fsspec.core.url_to_fs(file)
    try:
        if file.endswith(".parquet"):
            with fs.open(root, "rb") as f:
                return pd.read_parquet(f)
        rows = []
        with fs.open(root, "r", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise UserError(f"{file}:{number} is not valid JSON ({err.msg})") from None
        return pd.DataFrame(rows)
    except (OSError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"cannot read {file}: {err}") from err


def default_name(meta: dict[str, Any], folder: str) -> str:
    """A short label: generation.json's ``name``, else the model folder's name, else GEN's."""
    if meta.get("name"):
        return str(meta["name"])
    model = meta.get("model")
    if isinstance(model, str) and model:
        return PurePosixPath(model.rstrip("/")).name or model
    return PurePosixPath(folder.rstrip("/")).name or folder


def load_samples(path: str, *, name: str | None = None) -> SampleSet:
    """Read and validate GEN. Temperatures are held as their ``temperature_id`` (0.7 written as
    0.7000000001 by one writer still pairs with 0.7); a null text counts as an empty response."""
    file, folder = _find(path)
    rows = _read_table(file)
    if rows.empty:
        raise UserError(f"{file} holds no samples")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise UserError(f"{file} lacks column(s) {', '.join(missing)} (see drdo_ray/eval/samples.py)")
    for column, default in OPTIONAL_COLUMNS.items():
        if column not in rows.columns:
            rows[column] = default
    rows = rows.copy()
    rows["prompt_id"] = rows["prompt_id"].astype(str)
    rows["temperature"] = (
        pd.to_numeric(rows["temperature"], errors="coerce").map(temperature_id).astype(float)
    )
    rows["sample_idx"] = pd.to_numeric(rows["sample_idx"], errors="coerce").fillna(0).astype(int)
    rows["chat"] = rows["chat"].fillna(False).astype(bool)
    rows["text"] = rows["text"].fillna("").astype(str)
    rows["reference"] = rows["reference"].where(
        rows["reference"].notna() & (rows["reference"].astype(str) != ""), None
    )
    duplicated = rows.duplicated(KEY)
    if duplicated.any():
        first = rows.loc[duplicated, KEY].iloc[0].tolist()
        raise UserError(
            f"{file}: {int(duplicated.sum())} duplicate (prompt_id, temperature, sample_idx) keys, e.g. {first}"
        )
    meta_path = storage.join(folder, "generation.json")
    meta = storage.read_json(meta_path) if storage.exists(meta_path) else {}
    return SampleSet(
        path=path,
        rows=rows.reset_index(drop=True),
        meta=meta,
        name=name or default_name(meta, folder),
        file=file,
    )


def reference_set(a: SampleSet) -> SampleSet:
    """B = the reference responses of A's prompts, one per A sample key, so that pairing is
    the same operation as for two generated sets. Prompts without a reference are left out."""
    rows = a.rows[a.rows["reference"].notna()].copy()
    rows["text"] = rows["reference"]
    rows["model"] = REFERENCE
    rows["num_tokens"] = None
    rows["finish_reason"] = None
    return SampleSet(path=REFERENCE, rows=rows.reset_index(drop=True), meta={}, name=REFERENCE)


@dataclass
class Pairing:
    """Matched A/B rows (``text_a``, ``text_b``, the key, the prompt) and what did not match."""

    pairs: pd.DataFrame
    unpaired_a: int
    unpaired_b: int


def pair(a: SampleSet, b: SampleSet) -> Pairing:
    """Inner join on ``(prompt_id, temperature, sample_idx)``. The two sets must agree on the
    prompt text of every shared prompt_id (else they were generated from different prompts)."""
    left = a.rows[[*KEY, "prompt", "chat", "reference", "text"]]
    right = b.rows[[*KEY, "prompt", "text"]].rename(columns={"prompt": "prompt_b", "text": "text_b"})
    merged = left.rename(columns={"text": "text_a"}).merge(right, on=KEY, how="inner", validate="one_to_one")
    bad = merged[merged["prompt"] != merged["prompt_b"]]
    if not bad.empty:
        raise UserError(
            f"{a.name} and {b.name} hold different prompts under the same prompt_id "
            f"(e.g. {bad['prompt_id'].iloc[0]!r}); they were generated from different prompt sets"
        )
    merged = merged.drop(columns=["prompt_b"]).sort_values(KEY, kind="stable").reset_index(drop=True)
    return Pairing(pairs=merged, unpaired_a=len(a.rows) - len(merged), unpaired_b=len(b.rows) - len(merged))


def load_sides(
    a: str, b: str, *, a_name: str | None = None, b_name: str | None = None
) -> tuple[SampleSet, SampleSet, bool]:
    """The two sides of a comparison: A's samples, and B's samples or (``b == "reference"``) the
    reference responses of A's prompts. The bool says B is the reference."""
    side_a = load_samples(a, name=a_name)
    b_is_reference = b == REFERENCE
    side_b = reference_set(side_a) if b_is_reference else load_samples(b, name=b_name)
    if b_name and b_is_reference:
        side_b.name = b_name
    return side_a, side_b, b_is_reference


def select_pairs(pairs: pd.DataFrame, *, max_pairs: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``max_pairs`` pairs (the paper judges 1,000 random CNN/DM
    prompts), kept in key order; all pairs when ``max_pairs`` is None or not smaller."""
    if max_pairs is None or max_pairs >= len(pairs):
        return pairs
    return pairs.sample(n=max_pairs, random_state=seed).sort_values(KEY, kind="stable").reset_index(drop=True)
