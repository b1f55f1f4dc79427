"""DRDO under Ray Train with one worker, fed by Ray Data from a parquet file of the very rows the
direct run uses: the same `train_loop_per_worker` a real run uses, so the ratio to the direct
loop is what Ray Train + Ray Data add per step."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..config import TrainConfig
from . import train_inputs as inputs


def drdo_under_ray_train(
    cfg: TrainConfig, cols: dict[str, list[Any]], pad_id: int, extra: tuple[str, ...], threads: int
) -> list[float]:
    """Step times (s) of every logged step of the run."""
    import ray
    from ray.data import ExecutionOptions
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..ray_runtime import ensure_ray
    from ..train.data_check import DataInfo
    from ..train.ray_trainer import loop_config, train_loop_per_worker

    root = inputs.temp_dir("ray")
    names = ("prompt_ids", "chosen_ids", "rejected_ids", *extra)
    pq.write_table(pa.table({k: cols[k] for k in names}), root / "rows.parquet")
    rows = len(cols["prompt_ids"])
    ensure_ray()
    dataset = ray.data.read_parquet(str(root / "rows.parquet"))
    dataset.context.enable_progress_bars = False
    run_cfg = cfg.model_copy(
        update={"run_dir": str(root), "name": "drdo-under-ray", "cpus_per_worker": float(threads)}
    )
    gpu = torch.cuda.is_available()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(
            run_cfg,
            DataInfo(path=str(root), num_rows=rows, columns=names, extra=tuple(extra), edpo_oracles=0),
            pad_id,
        ),
        scaling_config=ScalingConfig(
            num_workers=1,
            use_gpu=gpu,
            resources_per_worker={"CPU": float(threads)} | ({"GPU": 1} if gpu else {}),
        ),
        run_config=RunConfig(name="drdo-under-ray", storage_path=str(root / "ray")),
        datasets={"train": dataset},
        dataset_config=DataConfig(
            datasets_to_split="all", execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    trainer.fit()
    metrics = root / "train" / "drdo-under-ray" / "metrics.jsonl"
    return [json.loads(line)["step_s"] for line in metrics.read_text().splitlines() if line]
