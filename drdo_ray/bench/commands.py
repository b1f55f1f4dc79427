"""CLI commands of drdo_ray.bench: `register(sub)` adds them to the `drdo-ray` parser.
Keep imports here light (heavy modules load inside the command functions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this package's subcommands. `common` adds --config and --set to a parser."""
