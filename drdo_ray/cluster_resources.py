"""Can the cluster ever hold what a command is about to ask of it? Ray queues an actor whose
resources no node has and waits forever ("No available node types can fulfill resource
request"), so `serve`, `generate` and `score` check their request here first and refuse an
impossible one with one line, instead of hanging.

``shortfall`` is the pure rule (request x count against the cluster's totals and its largest
node); ``placement`` adds the cluster's growth; ``require`` reads the cluster from Ray and
applies them. A cluster that can grow (``can_autoscale``) is given the benefit of the doubt
unless its autoscaler's node types (``autoscaler_node_types``: the launcher's config, or the
GCS record) show that none could ever hold the request, which then fails at once: `serve`
waits for its replicas, and `generate` and `score` for nodes that can hold their actor pool
(``wait_for_nodes``), each at most --startup-timeout.

Autoscaling is detected, in order:
- ``DRDO_RAY_AUTOSCALING=1`` (or ``0``) in the environment: the operator says so;
- the autoscaler's cluster config in the GCS (the record Ray Data and Ray Train read; not
  every deployment publishes it): a node group that may grow past its minimum;
- ``~/ray_bootstrap_config.yaml`` on the driver's node: the Ray cluster launcher (`ray up`)
  writes it on the head node, where `ray job submit` runs drivers (Ray Tune uses the same test).
A plain `ray start` or local cluster has none of these: it cannot grow. KubeRay with in-tree
autoscaling may have none either: set the variable there."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

AUTOSCALING_ENV = "DRDO_RAY_AUTOSCALING"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
_EPS = 1e-6  # Ray stores resource amounts in units of 1e-4


def _amounts(resources: Mapping[str, float]) -> dict[str, float]:
    return {name: float(v) for name, v in resources.items() if float(v) > 0}


def format_resources(resources: Mapping[str, float], names: Sequence[str] | None = None) -> str:
    """``{CPU: 4, GPU: 0}``: the named resources (default: every one given), whole numbers
    without a decimal point."""
    keys = list(names) if names is not None else sorted(resources)
    parts = []
    for name in keys:
        value = float(resources.get(name, 0))
        parts.append(f"{name}: {int(value) if value.is_integer() else round(value, 4)}")
    return "{" + ", ".join(parts) + "}"


def shortfall(
    per_actor: Mapping[str, float],
    count: int,
    totals: Mapping[str, float],
    nodes: Sequence[Mapping[str, float]] | None = None,
    *,
    what: str = "each actor",
    cluster: str = "the cluster",
) -> str | None:
    """None when ``count`` actors of ``per_actor`` fit the cluster; else why not, naming what
    was asked and what ``cluster`` has. Two rules: the cluster's totals must cover count x
    per_actor, and (when ``nodes`` is given: each alive node's total resources) one node must
    hold a whole actor, since an actor never spans nodes."""
    asked = _amounts(per_actor)
    if count <= 0 or not asked:
        return None
    names = sorted(set(asked) | {"CPU", "GPU"})
    need = {name: amount * count for name, amount in asked.items()}
    short = [name for name, amount in need.items() if amount > float(totals.get(name, 0)) + _EPS]
    has = f"{cluster} has {format_resources(totals, names)}"
    if short:
        times = f"{count} x {format_resources(asked)} = " if count > 1 else ""
        return (
            f"{what} needs {format_resources(asked)}: {times}{format_resources(need)} in all, "
            f"but {has} (short of {', '.join(short)})"
        )
    if nodes is not None and not any(
        all(float(node.get(name, 0)) + _EPS >= amount for name, amount in asked.items()) for node in nodes
    ):
        # The node that comes closest to holding one actor.
        biggest = max(
            nodes,
            key=lambda node: sum(min(float(node.get(n, 0)) / a, 1.0) for n, a in asked.items()),
            default={},
        )
        return (
            f"{what} needs {format_resources(asked)} on one node, but no node has that much "
            f"({has} in all; its largest node {format_resources(biggest, names)})"
        )
    return None


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler may add: each node's resources, and at most how many."""

    resources: dict[str, float]
    max_workers: int  # -1: no limit


def largest_cluster(
    totals: Mapping[str, float], nodes: Sequence[Mapping[str, float]], types: Mapping[str, NodeType]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The most the cluster can grow to: today's totals plus every node type at its
    max_workers (an upper bound: nodes already up count again), today's nodes plus one of each
    type. A request this cannot hold, no wait will."""
    grown = {name: float(v) for name, v in totals.items()}
    biggest = [dict(node) for node in nodes]
    for spec in types.values():
        if spec.max_workers == 0:
            continue
        times = 1e9 if spec.max_workers < 0 else spec.max_workers
        for name, amount in spec.resources.items():
            grown[name] = grown.get(name, 0.0) + float(amount) * times
        biggest.append(dict(spec.resources))
    return grown, biggest


def placement(
    per_actor: Mapping[str, float],
    count: int,
    totals: Mapping[str, float],
    nodes: Sequence[Mapping[str, float]],
    *,
    can_grow: bool,
    types: Mapping[str, NodeType] | None = None,
    what: str = "each actor",
) -> tuple[str, str | None]:
    """``("fits", None)``; ``("grow", why)``: only new nodes could hold it (a cluster that can
    grow, into node types that can, or unknown ones); ``("never", why)``: no wait would help."""
    problem = shortfall(per_actor, count, totals, nodes, what=what)
    if problem is None:
        return "fits", None
    if not can_grow:
        return "never", problem
    if types is not None:
        grown, biggest = largest_cluster(totals, nodes, types)
        listed = ", ".join(
            f"{name} {format_resources(spec.resources)}" for name, spec in sorted(types.items())
        )
        cluster = f"the cluster with every node its autoscaler may add ({listed})"
        never = shortfall(per_actor, count, grown, biggest, what=what, cluster=cluster)
        if never is not None:
            return "never", never
    return "grow", problem


# ------------------------------------------------------------------------------- Ray side


def _env_flag(value: str) -> bool | None:
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def _gcs_node_groups() -> list[Any]:
    """The autoscaler's node groups as recorded in the GCS (the record Ray Data reads); none
    where the autoscaler publishes no record."""
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # private API: absent or changed in another Ray version means "unknown"
        return []
    return list(config.node_group_configs) if config else []


def _gcs_node_groups_can_grow() -> bool:
    """Ray Data's own test: a node group of the autoscaler's config that may grow."""
    return any(
        group.max_count == -1 or group.max_count > group.min_count
        for group in _gcs_node_groups()
        if group.resources and group.max_count != 0
    )


def can_autoscale() -> bool:
    """Whether the connected cluster may add nodes (see the module docstring for the order)."""
    explicit = _env_flag(os.environ.get(AUTOSCALING_ENV, ""))
    if explicit is not None:
        return explicit
    return _gcs_node_groups_can_grow() or Path(BOOTSTRAP_CONFIG).expanduser().exists()


def node_types_of(config: Mapping[str, Any]) -> dict[str, NodeType]:
    """The worker node types of a cluster launcher config (cluster.yaml's form)."""
    head = config.get("head_node_type")
    return {
        name: NodeType(
            {k: float(v) for k, v in (spec.get("resources") or {}).items()}, int(spec.get("max_workers", 0))
        )
        for name, spec in (config.get("available_node_types") or {}).items()
        if name != head
    }


def autoscaler_node_types() -> dict[str, NodeType] | None:
    """The node types the connected cluster's autoscaler may add: from the launcher's config on
    this node (~/ray_bootstrap_config.yaml), else the autoscaler's record in the GCS; None
    when neither is there."""
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if path.exists():
        import yaml  # JSON is YAML: the launcher writes the file as JSON

        return node_types_of(yaml.safe_load(path.read_text()) or {})
    groups = _gcs_node_groups()
    if not groups:
        return None
    return {
        group.name: NodeType({k: float(v) for k, v in group.resources.items()}, int(group.max_count))
        for group in groups
    }


def cluster_totals() -> tuple[dict[str, float], list[dict[str, float]]]:
    """The connected cluster's total resources and each alive node's."""
    import ray

    nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    return dict(ray.cluster_resources()), nodes


def require(per_actor: Mapping[str, float], count: int, *, what: str, hint: str = "") -> str | None:
    """Check the request against the connected cluster. Impossible now and after any growth
    (a cluster that cannot grow, or none of its autoscaler's node types can hold it): UserError
    at once (one line, ``hint`` appended). Possible only with new nodes: returns the reason (the
    caller waits, bounded, for them). Possible: None."""
    totals, nodes = cluster_totals()
    grows = can_autoscale()
    types = autoscaler_node_types() if grows else None
    verdict, why = placement(per_actor, count, totals, nodes, can_grow=grows, types=types, what=what)
    if verdict == "never":
        assert why is not None
        raise UserError(f"{why}; {hint}" if hint else why)
    return why


def wait_for_nodes(per_actor: Mapping[str, float], count: int, timeout_s: float, *, reason: str) -> None:
    """Ask the autoscaler for room for ``count`` actors of ``per_actor`` and wait at most
    ``timeout_s`` for it: a placement group of those bundles is the demand the autoscaler acts
    on (a request it can never meet would wait forever). The group is removed either way, so the
    actors that follow take the room it found. UserError at the timeout, with ``reason``."""
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([_amounts(per_actor) for _ in range(count)], strategy="SPREAD")
    try:
        if not group.wait(timeout_seconds=timeout_s):
            raise UserError(
                f"{reason}, and no node that could came up within {timeout_s:g}s (--startup-timeout)"
            )
    finally:
        remove_placement_group(group)


def check_actor_pool(
    gpus: float,
    actors: int,
    console: Console | None = None,
    *,
    flag: str = "--set num_gpus_per_actor=N",
    timeout_s: float | None = None,
    resources: Mapping[str, float] | None = None,
) -> None:
    """The pre-check of a Ray Data ``map_batches`` actor pool of ``actors`` actors with ``gpus``
    GPUs each (and Ray Data's default of 1 CPU; plus custom ``resources``): UserError when Ray
    could never place it. When only new nodes could: wait for them at most ``timeout_s``
    (UserError past it), or with no ``timeout_s``, warn and let Ray Data wait."""
    request = {"CPU": 1.0, "GPU": gpus, **(resources or {})}
    waiting_for = require(
        request, actors, what="each actor", hint=f"lower {flag} or --num-actors, or add nodes that have them"
    )
    if not waiting_for:
        return
    if console is not None:
        bound = f" up to {timeout_s:g}s" if timeout_s is not None else ""
        console.print(f"[bold yellow]warning:[/] {waiting_for}; waiting{bound} for the cluster to add nodes")
    if timeout_s is not None:
        wait_for_nodes(request, actors, timeout_s, reason=waiting_for)
