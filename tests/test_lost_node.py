"""A lost node during multi-worker training (tests/cluster_lost_node.py, in its own process):
the node of one of the two Ray Train workers is removed after the first checkpoint, processes
and all. Ray Train restores the run from its last checkpoint on a replacement node, and it ends
as the untouched run does: the same optimizer steps, the same rows (traced per step: none twice,
none skipped) and the same final weights within float32 tolerance. Prints the figures.
`make test-cluster` (about 4 minutes here); its fast core, a restored run's row trace, is in
tests/test_loop_direct.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from local_head import run_script
from safetensors.torch import load_file

from drdo_ray.train.row_trace import traced_rows

ROOT = Path(__file__).resolve().parents[1]


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(900)
def test_a_lost_node_restores_from_the_checkpoint_to_the_same_result(tmp_path):
    result = run_script("cluster_lost_node.py", tmp_path / "run", timeout_s=840)
    clean, broken, lost = result["clean"], result["broken"], result["lost"]

    # The node is gone, and the restored run's workers ran on the two others, one each.
    assert lost["node"] not in result["alive"]
    assert lost["node"] not in result["ranks_after"] and len(set(result["ranks_after"])) == 2

    # The same optimizer steps and the same rows, counted...
    for key in ("global_step", "consumed_samples", "status"):
        assert broken["metrics"][key] == clean["metrics"][key], key
    # ...and traced: every row the untouched run trained on, once, none more.
    rows, rows_clean = traced_rows(Path(broken["train_dir"])), traced_rows(Path(clean["train_dir"]))
    assert rows == rows_clean and len(rows) == clean["metrics"]["consumed_samples"]
    assert max(Counter(rows).values()) == 1  # one epoch: no row twice

    # Restored from a checkpoint, not started over: rank 1's first steps are the lost process's.
    trace = [
        json.loads(x) for x in (Path(broken["train_dir"]) / "rows-rank-1.jsonl").read_text().splitlines()
    ]
    assert [t["step"] for t in trace] == list(range(1, clean["metrics"]["global_step"] + 1))
    pids = [t["pid"] for t in trace]
    assert len(set(pids)) == 2, pids  # the lost process's lines, then its replacement's
    restored_at = pids.index(pids[-1])  # the steps the lost process trained, kept
    assert restored_at >= 5 and restored_at % 5 == 0  # a checkpoint step (checkpoint_every=5)

    # The same final model.
    a, b = _weights(clean["model"]), _weights(broken["model"])
    diff = max(float((a[name] - b[name]).abs().max()) for name in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)
    print(
        f"lost node after checkpoint {lost['after_checkpoint']}: restored from step {restored_at}; steps "
        f"{broken['metrics']['global_step']} vs {clean['metrics']['global_step']}, rows "
        f"{len(rows)} vs {len(rows_clean)} (none twice), final weights max |diff| {diff:.3g}"
    )
