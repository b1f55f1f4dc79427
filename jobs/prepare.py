"""`ray job submit --working-dir . -- python jobs/prepare.py --config configs/data-tldr.yaml`

Same arguments as `drdo-ray data prepare`; the job joins the cluster it was submitted to."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "prepare", *sys.argv[1:]]))
