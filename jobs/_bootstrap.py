"""Make the package importable when a job runs from a `ray job submit --working-dir .` copy
of the repository (the job's cwd is the repo root; `python jobs/x.py` puts jobs/ first on
sys.path, not the root)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
