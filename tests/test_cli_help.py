"""`drdo-ray --help` is a front door: every command is listed under what a user does with it, every
command's help ends with an example that the real parser accepts, and `train align --help`
answers without importing torch."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from drdo_ray.cli import build_parser
from drdo_ray.cli_help import EXAMPLES, GROUPS, leaf_commands

LEAVES = {" ".join(words): child for words, child, _ in leaf_commands(build_parser())}


def test_every_command_has_one_group_and_the_help_lists_them_by_group(capsys):
    grouped = [command for commands in GROUPS.values() for command in commands]
    assert len(grouped) == len(set(grouped)), "a command in two groups"
    assert {name.split()[0] for name in LEAVES} == set(grouped)
    assert list(GROUPS) == ["prepare", "train", "evaluate", "serve", "benchmark", "run everything"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    # Each command appears once, under its group's heading, in the groups' order.
    headings = [out.index(f"\n  {group}\n") for group in GROUPS]
    assert headings == sorted(headings)
    lines = out.splitlines()
    for name in LEAVES:
        (at,) = [i for i, line in enumerate(lines) if line.startswith(f"    {name} ")]
        heading = next(line for line in reversed(lines[:at]) if not line.startswith("    "))
        assert name.split()[0] in GROUPS[heading.strip()], name
    assert "usage: drdo-ray [-h] COMMAND ..." in out


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_every_command_help_ends_with_an_example_the_parser_accepts(name, capsys):
    example = EXAMPLES[name]
    words = shlex.split(example.split(" > ")[0])
    assert words[0] == "drdo-ray" and " ".join(words[1:]).startswith(name)
    build_parser().parse_args(words[1:])  # exits (status 2) on any flag or value it refuses
    with pytest.raises(SystemExit):
        build_parser().parse_args([*name.split(), "--help"])
    assert capsys.readouterr().out.rstrip().endswith(f"example:\n  {example}")


def test_examples_name_only_real_commands():
    assert set(EXAMPLES) == set(LEAVES)


def test_train_align_help_does_not_import_torch():
    code = (
        "import sys\nfrom drdo_ray.cli import main\ntry:\n    main(['train', 'align', '--help'])\n"
        "except SystemExit:\n    pass\nprint('torch imported' if 'torch' in sys.modules else 'no torch')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--loss LOSS" in proc.stdout and "drdo_minus_r" in proc.stdout  # the losses are listed
    assert proc.stdout.rstrip().endswith("no torch")
