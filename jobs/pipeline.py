"""`ray job submit --working-dir . -- python jobs/pipeline.py --config configs/opt-1.3b-ultrafeedback.yaml`

Same arguments as `drdo-ray pipeline` (--stages, --force, --dry-run, --set): every stage of the
experiment runs on the cluster the job was submitted to, under the config's run_dir (s3://... so
every node shares it). Resubmitting the same command resumes: finished stages are skipped."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
