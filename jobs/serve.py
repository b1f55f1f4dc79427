"""`ray job submit --working-dir . -- python jobs/serve.py --model RUN/models/align-drdo --host 0.0.0.0`

Same arguments as `drdo-ray serve`. The job deploys the app to the cluster it was submitted to
and returns (--detach is implied): the app keeps serving after the job ends. Take it down with
`serve shutdown` (every app), or `serve.delete("drdo-llm")` and `serve.delete("drdo-llm-health")`
(its /health app) from Python. Set the API key in the cluster's environment (DRDO_RAY_API_KEY)
rather than on the command line, which the job record keeps."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["serve", *args, *([] if "--detach" in args else ["--detach"])]))
