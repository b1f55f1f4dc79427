"""What `drdo-ray --help` shows: the commands grouped by what a user does, and a one-line example
under each command's own help. Both tables live here, apart from where the commands are
registered, so a command can move between packages without touching them; a test checks that
every command has a group and an example, and that each example parses."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterator

# Each top-level command's group, in the order `drdo-ray --help` lists the groups.
GROUPS: dict[str, tuple[str, ...]] = {
    "prepare": ("models", "data"),
    "train": ("train", "score"),
    "evaluate": ("generate", "eval", "report"),
    "serve": ("serve",),
    "benchmark": ("bench",),
    "run everything": ("demo", "pipeline", "configs"),
}

# One example per command (the words after `drdo-ray`, as `drdo-ray --help` lists them).
EXAMPLES: dict[str, str] = {
    "models tiny": "drdo-ray models tiny --out runs/tiny",
    "data prepare": "drdo-ray data prepare --source tldr --input sample --tldr-split easy "
    "--tokenizer runs/tiny --out runs/data/tldr_easy",
    "train sft": "drdo-ray train sft --model runs/tiny --data runs/data/tldr_sft --run-dir runs/run1 "
    "--max-steps 200",
    "train oracle": "drdo-ray train oracle --model runs/run1/models/sft --data runs/data/tldr_full "
    "--run-dir runs/run1 --zero-stage 2",
    "train align": "drdo-ray train align --loss drdo --model runs/run1/models/sft "
    "--data runs/run1/scored/tldr_easy --run-dir runs/run1",
    "score": "drdo-ray score --data runs/data/tldr_easy --oracle runs/run1/models/oracle "
    "--reference runs/run1/models/sft --out runs/run1/scored/tldr_easy",
    "generate": "drdo-ray generate --model runs/run1/models/align-drdo --prompts runs/data/tldr_sft "
    "--temperatures 0.2,0.7 --out runs/run1/samples/align-drdo",
    "eval winrate": "drdo-ray eval winrate --a runs/run1/samples/align-drdo --b runs/run1/samples/align-dpo "
    "--oracle runs/run1/models/oracle --out runs/run1/eval/winrate-drdo-vs-dpo",
    "eval judge": "drdo-ray eval judge --a runs/run1/samples/align-drdo --b runs/run1/samples/align-dpo "
    "--model gpt-4o --max-cost 5 --out runs/run1/eval/judge-drdo-vs-dpo",
    "eval kl": "drdo-ray eval kl --policy runs/run1/models/align-drdo --reference runs/run1/models/sft "
    "--samples runs/run1/samples/align-drdo --out runs/run1/eval/kl-drdo",
    "eval ood": "drdo-ray eval ood --result runs/run1/eval/winrate-drdo-vs-dpo --at-temperature 0.7",
    "report": "drdo-ray report --run runs/run1",
    "serve": "drdo-ray serve --model runs/run1/models/align-drdo --api-key KEY",
    "bench serve": "drdo-ray bench serve --out /tmp/bench_serve",
    "bench generate": "drdo-ray bench generate --repeats 3",
    "bench train": "drdo-ray bench train --out /tmp/bench_train",
    "bench quality": "drdo-ray bench quality --quick --out /tmp/bench_quality",
    "bench online": "drdo-ray bench online --pipeline demo-online-tiny-cpu --out /tmp/bench_online",
    "bench tables": "drdo-ray bench tables --check",
    "demo": "drdo-ray demo --dry-run",
    "pipeline": "drdo-ray pipeline --config opt-1.3b-ultrafeedback --set run_dir=/tmp/run --dry-run",
    "configs": "drdo-ray configs opt-1.3b-ultrafeedback > my-experiment.yaml",
}


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The parser's subcommand action, if it has one."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def leaf_commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(words, parser, one-line help) of every runnable command under ``parser``."""
    sub = subcommands(parser)
    if sub is None:
        return
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    for name, child in sub.choices.items():
        if subcommands(child) is None:
            yield (*words, name), child, helps.get(name, "")
        else:
            yield from leaf_commands(child, (*words, name))


def finish(parser: argparse.ArgumentParser) -> None:
    """Put the grouped command list into the top-level help and an example under each command."""
    leaves = {" ".join(words): (child, text) for words, child, text in leaf_commands(parser)}
    width = max(map(len, leaves)) + 2
    # A command no group names yet is listed under "other" (and test_cli_help.py fails on it).
    other = sorted({name.split()[0] for name in leaves} - {c for cs in GROUPS.values() for c in cs})
    lines = ["commands, by what you do:"]
    for group, commands in [*GROUPS.items(), ("other", tuple(other))]:
        entries = [
            textwrap.fill(
                text, 100, initial_indent=f"    {name:{width}}", subsequent_indent=" " * (4 + width)
            )
            for top in commands
            for name, (_, text) in leaves.items()
            if name.split()[0] == top
        ]
        if entries:
            lines += [f"  {group}", *entries]
    lines += ["", "`drdo-ray COMMAND --help` gives a command's flags and an example."]
    parser.usage = f"{parser.prog} [-h] COMMAND ..."
    parser.epilog = "\n".join(lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = subcommands(parser)
    if sub is not None:
        sub.help = argparse.SUPPRESS  # listed above, by group, instead of argparse's flat list
    for name, (child, _) in leaves.items():
        if name in EXAMPLES:
            child.epilog = f"example:\n  {EXAMPLES[name]}"
            child.formatter_class = argparse.RawDescriptionHelpFormatter
