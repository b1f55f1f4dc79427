"""Make the package importable when a job runs from a `ray job submit --working-dir .` copy
of the repository (the job's cwd is the repo root; `python jobs/x.py` puts jobs/ first on
sys.path, not the root), and say so in one line when the job's Python lacks drdo-ray's
dependencies: the job runs the `python` first on the PATH that `ray start` was given."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# What `drdo_ray.cli` imports on start (the rest is imported by the commands that need it).
NEEDED = ("rich", "yaml", "pydantic", "torch", "ray")
missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
if missing:
    print(
        f"{Path(sys.argv[0]).name}: error: {sys.executable} cannot import {', '.join(missing)}: the job runs "
        "the python first on the PATH that `ray start` was given; start the head from the environment "
        "drdo-ray is installed in (`source .venv/bin/activate`, then `ray start --head`)",
        file=sys.stderr,
    )
    sys.exit(2)
