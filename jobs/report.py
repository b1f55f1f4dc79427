"""`ray job submit --working-dir . -- python jobs/report.py --run s3://bucket/run`

Same arguments as `drdo-ray report`: reads RUN/train/*/ and RUN/eval/**/, writes
RUN/report/report.md and RUN/report/figures/*.png (local or object storage). No Ray needed."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
