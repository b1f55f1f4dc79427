"""Helper of tests/test_lost_node.py, run in its own process (the test session already holds a
ray.init()): a `ray.cluster_utils.Cluster` with a head and three worker nodes that advertise a
`trainer` resource, the tiny model and TL;DR SFT rows, then the same 2-worker SFT run twice, one
worker per node (STRICT_SPREAD): once untouched, once losing the node of rank 1 (its raylet and
every process on it, killed) after its first checkpoint was reported. Ray Train restores that run from its
last checkpoint on the spare node. Prints one JSON line for the test to check."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from ray_checkpoints import registered_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = 60
CHECKPOINT_EVERY = 5


def _node_of_rank(train_dir: Path, rank: int) -> str:
    return json.loads((train_dir / "workers" / f"rank-{rank}.json").read_text())["node_id"]


def _config(run: Path, name: str):  # -> TrainConfig (imported late: after sys.path is set)
    from drdo_ray.config import TrainConfig

    return TrainConfig(
        stage="sft",
        name=name,
        model=str(run / "models" / "tiny"),
        data=str(run / "data" / "tldr_sft"),
        run_dir=str(run),
        num_workers=2,
        micro_batch_size=2,
        max_steps=STEPS,
        checkpoint_every=CHECKPOINT_EVERY,
        max_failures=2,
        lr=1e-3,
        placement_strategy="STRICT_SPREAD",
        resources_per_worker={"trainer": 1},
        trace_rows=True,
    )


def _lose_a_node(cluster, nodes: list, train_dir: Path, lost: dict[str, object]) -> None:
    """Once the first checkpoint is registered (the workers went past it), the node of rank 1
    goes, abruptly; what went and when is written into ``lost``."""
    while registered_checkpoint(train_dir) is None:
        time.sleep(0.05)
    victim = _node_of_rank(train_dir, 1)
    node = next(n for n in nodes if n.node_id == victim)
    lost["node"] = victim
    lost["after_checkpoint"] = registered_checkpoint(train_dir)
    cluster.remove_node(node, allow_graceful=False)
    lost["at"] = time.time()


def main(run_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from drdo_ray.config import load_config
    from drdo_ray.pipeline import run_pipeline
    from drdo_ray.pipeline_config import PipelineConfig
    from drdo_ray.train.ray_trainer import fit

    run = Path(run_dir)
    # The head runs the driver and Ray Data; training runs only where `trainer` is advertised.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1, resources={"trainer": 1}) for _ in range(3)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        pipeline = load_config(
            PipelineConfig,
            config_file=str(ROOT / "configs" / "demo-tiny-cpu.yaml"),
            section="pipeline",
            overrides=[f"run_dir={run}"],
        )
        run_pipeline(pipeline, stages=["model", "prepare:tldr_sft"])
        clean = fit(_config(run, "clean"))

        lost: dict[str, object] = {}
        train_dir = run / "train" / "lost-node"
        killer = threading.Thread(target=_lose_a_node, args=(cluster, nodes, train_dir, lost), daemon=True)
        killer.start()
        broken = fit(_config(run, "lost-node"))
        killer.join(timeout=5)
        alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        result = {
            "clean": clean,
            "broken": broken,
            "lost": lost,
            "alive": alive,
            "ranks_after": [_node_of_rank(train_dir, r) for r in (0, 1)],
        }
        print("RESULT " + json.dumps(result, default=str), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
