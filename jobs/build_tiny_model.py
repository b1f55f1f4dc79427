"""`ray job submit --working-dir . -- python jobs/build_tiny_model.py --out /tmp/tiny`"""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", "tiny", *sys.argv[1:]]))
