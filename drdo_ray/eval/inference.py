"""Ray Data plumbing shared by the model-based evaluations (Oracle win rate, KL): a pandas
frame of texts goes through a ``map_batches`` actor pool whose actors load their models once,
the same way `drdo-ray score` runs (docs/architecture.md: Ray at the edges)."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
from rich.console import Console


def text_uid(prompt: str, chat: bool, text: str) -> str:
    """Content id of a (prompt, response) to score: identical texts are scored once and so get
    bit-identical rewards (a tie, not a coin flip of batch-dependent float noise)."""
    digest = hashlib.sha1()
    for part in (str(bool(chat)), prompt, text):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def check_tokenizer(path: str, *, role: str) -> None:
    """Fail on the driver, in one line, before actors try to tokenize with a model folder that
    ships no tokenizer."""
    from ..errors import UserError

    try:
        from transformers import AutoTokenizer

        from ..artifacts import local_model

        AutoTokenizer.from_pretrained(local_model(path))
    except Exception as err:  # missing files, offline hub id: one line for the user
        raise UserError(
            f"{role} {path} has no loadable tokenizer ({str(err).splitlines()[0][:200]})"
        ) from err


def map_with_actors(
    frame: pd.DataFrame,
    actor: type,
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    batch_size: int,
    num_actors: int,
    num_gpus: float | None,
    console: Console | None = None,
) -> pd.DataFrame:
    """Run ``actor(*args, **kwargs)(batch)`` over ``frame`` on an actor pool; returns the
    concatenated outputs (row order is not guaranteed: join on an id column). Rows are sorted by
    text length first so each batch pads to similar lengths. A pool the cluster could never place
    fails first, as for `score` and `generate` (Ray Data would wait for it forever)."""
    import ray.data

    from ..artifacts import gpus_per_actor
    from ..cluster_resources import check_actor_pool
    from ..ray_runtime import ensure_ray

    ensure_ray()
    if frame.empty:
        return pd.DataFrame()
    check_actor_pool(gpus_per_actor(num_gpus), num_actors, console, flag="--num-gpus-per-actor")
    order = (frame["prompt"].str.len() + frame["text"].str.len()).sort_values(kind="stable").index
    dataset = ray.data.from_pandas(frame.loc[order].reset_index(drop=True))
    mapped = dataset.map_batches(
        actor,
        fn_constructor_args=args,
        fn_constructor_kwargs=kwargs,
        batch_format="pandas",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=gpus_per_actor(num_gpus),
    )
    return mapped.to_pandas()
