"""A finished online round's record, RUN/rounds/<k>/round.json: what the round started from and
read (paths and content fingerprints: each method's start policy, the policy that sampled its
data, the Oracle, the reference, the prompt window), how stale its data was, its pairs, the
Oracle-reward distribution of its samples and its held-out win rates. The report's online
section reads these records."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from rich.console import Console

from .. import storage
from ..artifacts import fingerprint
from ..config import StageConfig


class RoundRecordConfig(StageConfig):
    """What the planner knows of round ``round`` (drdo_ray/online/rounds.py)."""

    round: int = Field(ge=1)
    tag: str
    out: str = Field(description="RUN/rounds/<k>/round.json")
    oracle: str
    prompts: dict[str, Any] = Field(description="dataset, path, offset, limit")
    methods: dict[str, dict[str, Any]] = Field(
        description="method -> loss, start, sampled_by, sampled_round, staleness, reference, samples, "
        "pairs, scored, model, winrates {vs: folder}"
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="the online section's settings")


def _input(path: str | None) -> dict[str, Any] | None:
    return {"path": path, "fingerprint": fingerprint(path)} if path else None


def _winrate(folder: str) -> dict[str, Any] | None:
    path = storage.join(folder, "winrate.json")
    if not storage.exists(path):
        return None
    r = storage.read_json(path)
    keep = ("n", "wins", "ties", "losses", "win_rate", "ci95", "mean_reward_a", "mean_reward_b")
    return {k: r.get(k) for k in keep} | {
        "a": (r.get("a") or {}).get("name"),
        "b": (r.get("b") or {}).get("name"),
    }


def method_record(entry: dict[str, Any]) -> dict[str, Any]:
    """One method's part of round.json, read back from the round's outputs."""
    pairs = storage.read_json(storage.join(entry["pairs"], "pairs.json"))
    generation = storage.read_json(storage.join(entry["samples"], "generation.json"))
    return {
        "loss": entry["loss"],
        "start": _input(entry["start"]),
        "sampled_by": _input(entry["sampled_by"]) | {"round": entry["sampled_round"]},  # type: ignore[operator]
        "staleness": entry["staleness"],
        "reference": _input(entry["reference"]),
        "model": _input(entry["model"]),
        "samples": {
            "path": entry["samples"],
            "rows": generation.get("rows"),
            "elapsed_s": generation.get("elapsed_s"),
            "backend": generation.get("backend"),
        },
        "sample_rewards": pairs["sample_rewards"],
        "pairs": {k: pairs[k] for k in ("pairs", "prompts", "prompts_with_pairs", "skipped", "margin")},
        "winrates": {which: _winrate(folder) for which, folder in entry["winrates"].items()},
    }


def write_round_record(cfg: RoundRecordConfig, console: Console | None = None) -> dict[str, Any]:
    """Write round.json (the round's last step: its presence marks the round finished)."""
    console = console or Console(stderr=True)
    record = {
        "round": cfg.round,
        "tag": cfg.tag,
        "oracle": _input(cfg.oracle),
        "prompts": cfg.prompts | {"fingerprint": fingerprint(cfg.prompts["path"])},
        "methods": {m: method_record(entry) for m, entry in cfg.methods.items()},
        "settings": cfg.settings,
    }
    storage.write_json(cfg.out, record)
    for method, r in record["methods"].items():
        vs_sft = (r["winrates"].get("sft") or {}).get("win_rate")
        console.print(
            f"[bold]{cfg.tag}[/] {method}: {r['pairs']['pairs']} pairs from {r['pairs']['prompts']} prompts, "
            f"staleness {r['staleness']}, mean sample reward {_fmt(r['sample_rewards'].get('mean'))}, "
            f"held-out win rate vs SFT {_fmt(vs_sft)}"
        )
    return record


def differences(cfg: RoundRecordConfig) -> list[str]:
    """How a finished round (its round.json) differs from what the config plans for it now: other
    settings (beside ``rounds``), another prompt window, Oracle, start policy, sampling policy or
    reference (by content fingerprint). Empty when the round stands as it is."""
    if not storage.exists(cfg.out):
        return []
    old = storage.read_json(cfg.out)
    found = [
        f"{key} {old['settings'].get(key)!r}, not {value!r}"
        for key, value in cfg.settings.items()
        if key != "rounds" and old.get("settings", {}).get(key) != value
    ]
    window = {k: cfg.prompts[k] for k in ("path", "offset", "limit")}
    was = {k: old.get("prompts", {}).get(k) for k in window}
    if was != window:
        found.append(f"other prompts (offset {was['offset']}, limit {was['limit']} of {was['path']})")
    inputs = {"oracle": (old.get("oracle"), cfg.oracle)}
    for method, entry in cfg.methods.items():
        recorded = old.get("methods", {}).get(method)
        if recorded is None:
            found.append(f"no method {method}")
            continue
        for key in ("start", "sampled_by", "reference"):
            inputs[f"{method}'s {key}"] = (recorded.get(key), entry[key])
    for what, (recorded, path) in inputs.items():
        if (recorded or {}).get("path") != path:
            found.append(f"another {what} ({(recorded or {}).get('path')})")
        elif path and storage.exists(path) and recorded["fingerprint"] != fingerprint(path):
            found.append(f"{what} {path} changed since")
    return found


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
