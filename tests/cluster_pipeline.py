"""Helper of tests/test_cluster.py, run in its own process (the test session already holds a
ray.init()): a 2-node Ray cluster from ``ray.cluster_utils.Cluster``, then the tiny pipeline's
model -> prepare tldr_sft -> sft stages on it, the SFT's 2 workers on different nodes
(STRICT_SPREAD), every node writing to the one run directory given on the command line. Prints
one JSON line (the cluster's node ids and the pipeline's result) for the test to check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(run_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    # 3 logical CPUs per node on a 2-core machine: one training worker per node plus Ray Data tasks.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 3, "resources": {"node_a": 1}, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=3, resources={"node_b": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        from drdo_ray.config import load_config
        from drdo_ray.pipeline import run_pipeline
        from drdo_ray.pipeline_config import PipelineConfig

        cfg = load_config(
            PipelineConfig,
            config_file=str(ROOT / "configs" / "demo-tiny-cpu.yaml"),
            section="pipeline",
            overrides=[
                f"run_dir={run_dir}",
                "train.placement_strategy=STRICT_SPREAD",
                "train.num_workers=2",
                "train.max_steps=2",
                "train.checkpoint_every=1",
            ],
        )
        result = run_pipeline(cfg, stages=["model", "prepare:tldr_sft", "sft"])
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        print("RESULT " + json.dumps({"nodes": nodes, "result": result}), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
