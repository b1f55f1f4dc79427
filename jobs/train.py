"""`ray job submit --working-dir . -- python jobs/train.py {sft,oracle,align} --config configs/X.yaml`

Same arguments as `drdo-ray train`; the TorchTrainer runs on the cluster the job was submitted to."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
