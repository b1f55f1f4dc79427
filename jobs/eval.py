"""`ray job submit --working-dir . -- python jobs/eval.py winrate --a RUN/samples/align-drdo --b RUN/samples/align-dpo --oracle RUN/models/oracle --out RUN/eval/winrate-drdo-vs-dpo`

Same arguments as `drdo-ray eval {winrate,judge,kl,ood}`; the job joins the cluster it was
submitted to (scoring actors are scheduled on its GPU workers). For `judge`, pass the API key
as an environment variable of the job (`--runtime-env-json '{"env_vars": {...}}'`), never as an
argument: arguments are recorded in the job's metadata."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
