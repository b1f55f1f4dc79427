"""`drdo-ray bench tables`: the published benchmark tables are generated from the committed JSON,
and a change to a JSON file that is not regenerated fails the check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from drdo_ray.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tables_match_the_committed_json() -> None:
    # Run from the repository root: the defaults name benchmarks/README.md and docs/benchmarks.md.
    assert (
        main(
            [
                "bench",
                "tables",
                "--check",
                "--folder",
                str(ROOT / "benchmarks"),
                "--readme",
                str(ROOT / "benchmarks" / "README.md"),
                "--docs",
                str(ROOT / "docs" / "benchmarks.md"),
            ]
        )
        == 0
    ), "benchmarks/README.md or docs/benchmarks.md is stale: run drdo-ray bench tables"


def test_a_json_change_without_regenerating_fails_the_check(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "benchmarks"
    shutil.copytree(ROOT / "benchmarks", folder)
    args = [
        "bench",
        "tables",
        "--folder",
        str(folder),
        "--readme",
        str(folder / "README.md"),
        "--docs",
        str(tmp_path / "d.md"),
    ]
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    path = next(p for p in sorted(folder.glob("*.json")) if "methods" in json.loads(p.read_text()))
    report = json.loads(path.read_text())
    first = next(iter(report["methods"].values()))
    first["step_s"] *= 2  # a figure changed in the JSON only
    path.write_text(json.dumps(report))
    assert main([*args, "--check"]) == 2
    assert "differ from" in capsys.readouterr().err
    assert main(args) == 0
    assert f"{first['step_s']:.3f}" in (folder / "README.md").read_text()
