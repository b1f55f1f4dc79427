"""CLI command of drdo_ray.generation: `register(sub)` adds `generate` to the `drdo-ray` parser.
Keep imports here light (the driver loads Ray inside the command)."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..cli_flags import add_common, add_config_flags, config_from_args
from ..config import GenerateConfig

console = Console(stderr=True)


def cmd_generate(args: argparse.Namespace) -> None:
    cfg = config_from_args(GenerateConfig, args, "generate")
    from .sampling import generate_samples

    result = generate_samples(cfg, console)
    if result.get("reused"):
        console.print(
            f"[bold]generate[/] reused: {cfg.out} already holds these samples (--force regenerates)"
        )
    else:
        console.print(
            f"generated {result['rows']} samples ({result['prompts_count']} prompts x "
            f"{len(cfg.temperatures)} temperatures x {cfg.samples_per_prompt}) in {result['elapsed_s']:.1f}s, "
            f"{result['tokens_per_s']:.0f} tokens/s"
        )
    for name, where in result["outputs"].items():
        console.print(f"  {name:10s} {where}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `generate`; its flags are GenerateConfig's fields."""
    g = sub.add_parser("generate", help="sample every prompt at every temperature (Ray Data batch inference)")
    add_common(g)
    add_config_flags(
        g, GenerateConfig, custom={"num_gpus_per_actor": {"flags": ["--num-gpus-per-actor", "--num-gpus"]}}
    )
    g.set_defaults(func=cmd_generate)
