"""`ray job submit --working-dir . -- python jobs/score.py --data RUN/data/uf --oracle RUN/models/oracle --out RUN/data/uf-scored`

Same arguments as `drdo-ray score`; the job joins the cluster it was submitted to."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
