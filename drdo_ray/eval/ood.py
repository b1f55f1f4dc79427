"""OOD breakdown (App. F.2, Fig. 6): any win-rate result binned by prompt token length.

`eval winrate` and `eval judge` write it beside their result; `drdo-ray eval ood --result DIR`
rebins a finished result (another bin width, one temperature) without rescoring:

    DIR/ood.json   bins: lo, hi, label, n, wins, ties, losses, win_rate, ci95
    DIR/ood.md     the same as a Markdown table
    DIR/ood.png    win rate per bin with 95% intervals, pairs per bin below
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec

from .. import storage
from ..config import OODConfig
from ..errors import UserError
from ..generation.sampling_params import temperature_id
from . import stats
from .results import write_result

PER_PAIR_FILES = ("pairs.jsonl", "verdicts.jsonl")  # winrate, judge
DECIDED = ("win", "tie", "loss")


def ood_result(
    rows: Iterable[Mapping[str, Any]],
    *,
    width: int = 50,
    n_boot: int = stats.DEFAULT_BOOTSTRAP,
    seed: int = 0,
    at_temperature: float | None = None,
    source: str = "",
    a: str = "A",
    b: str = "B",
    tokenizer: str | None = None,
) -> dict[str, Any]:
    """Bins of per-pair rows (``outcome`` in win/tie/loss, ``prompt_tokens``, ``prompt_id``,
    ``temperature``); with ``at_temperature``, only the rows sampled at that temperature. Rows
    without a decided outcome (dropped, not judged) or without a prompt length are left out and
    counted."""
    kept, no_length = [], 0
    for row in rows:
        if row.get("outcome") not in DECIDED:
            continue
        if (
            at_temperature is not None
            and row.get("temperature") is not None
            and temperature_id(row["temperature"]) != temperature_id(at_temperature)
        ):
            continue
        if row.get("prompt_tokens") is None:
            no_length += 1
            continue
        kept.append(row)
    bins = stats.length_bins(
        [stats.OUTCOME_VALUES[r["outcome"]] for r in kept],
        [int(r["prompt_tokens"]) for r in kept],
        [r.get("prompt_id") for r in kept],
        width=width,
        n_boot=n_boot,
        seed=seed,
    )
    return {
        "kind": "ood",
        "source": source,
        "a": a,
        "b": b,
        "bin_width": width,
        "at_temperature": at_temperature,
        "tokenizer": tokenizer,
        "n": len(kept),
        "no_prompt_length": no_length,
        "bins": bins,
        "bootstrap": {"n": n_boot, "seed": seed, "unit": "prompt"},
    }


def markdown_table(ood: Mapping[str, Any]) -> str:
    lines = [
        "| prompt tokens | pairs | wins | ties | losses | win rate [95% CI] |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for b in ood["bins"]:
        lines.append(
            f"| {b['label']} | {b['n']} | {b['wins']} | {b['ties']} | {b['losses']} | "
            f"{stats.fmt_rate(b['win_rate'], b['ci95'])} |"
        )
    return "\n".join(lines)


def title(ood: Mapping[str, Any]) -> str:
    temp = f", T={ood['at_temperature']:g}" if ood.get("at_temperature") is not None else ""
    return f"{ood['a']} vs {ood['b']} ({ood['source']}{temp}): win rate by prompt length"


def write_ood(out: str, ood: dict[str, Any]) -> dict[str, str]:
    """ood.json, ood.md and (with at least one bin) ood.png in ``out``; returns their paths."""
    from .plots import plot_ood

    paths = {"ood": storage.join(out, "ood.json"), "ood_table": storage.join(out, "ood.md")}
    write_result(paths["ood"], ood)
    note = (
        f"\n\n{ood['no_prompt_length']} pair(s) without a prompt length left out."
        if ood["no_prompt_length"]
        else ""
    )
    fs, root = fsspec.core.url_to_fs(paths["ood_table"])
    with fs.open(root, "w", encoding="utf-8") as f:
        f.write(f"# {title(ood)}\n\n{markdown_table(ood)}{note}\n")
    png = plot_ood({f"{ood['a']} vs {ood['b']}": ood["bins"]}, storage.join(out, "ood.png"), title=title(ood))
    if png:
        paths["ood_plot"] = png
    return paths


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    fs, root = fsspec.core.url_to_fs(path)
    with fs.open(root, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rebin(cfg: OODConfig) -> dict[str, Any]:
    """Rebin a finished winrate/judge result in place (DIR/ood.*)."""
    for name, summary_name in zip(PER_PAIR_FILES, ("winrate.json", "judge.json")):
        path = storage.join(cfg.result, name)
        if storage.exists(path):
            summary_path = storage.join(cfg.result, summary_name)
            summary = storage.read_json(summary_path) if storage.exists(summary_path) else {}
            break
    else:
        raise UserError(f"{cfg.result} holds no {' or '.join(PER_PAIR_FILES)}: not a win-rate result folder")
    rows = _read_jsonl(path)
    previous = storage.join(cfg.result, "ood.json")
    tokenizer = storage.read_json(previous).get("tokenizer") if storage.exists(previous) else None
    ood = ood_result(
        rows,
        width=cfg.bin_width,
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
        at_temperature=cfg.at_temperature,
        source=summary.get("kind", name.split(".")[0]),
        a=(summary.get("a") or {}).get("name", "A"),
        b=(summary.get("b") or {}).get("name", "B"),
        tokenizer=tokenizer,
    )
    if ood["n"] == 0:
        raise UserError(f"{path}: no decided pair with a prompt length to bin")
    return {**ood, "outputs": write_ood(cfg.result, ood)}
