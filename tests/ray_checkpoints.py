"""Helper of the tests that stop a training run from outside and check where it resumes
(test_online_rounds.py, cluster_lost_node.py): the checkpoint Ray Train has registered."""

from __future__ import annotations

import json
from pathlib import Path


def registered_checkpoint(train_dir: Path) -> str | None:
    """The newest checkpoint Ray Train has registered (``step_...``): what a restart restores. A
    step_* folder alone may be one it had not registered yet when the run was stopped."""
    snapshot = train_dir / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):  # not there yet, or being rewritten
        return None
    return latest.get("checkpoint_dir_name")
