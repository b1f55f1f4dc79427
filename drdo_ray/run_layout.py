"""The run directory, spelled in one place. Every stage of an experiment writes under one root, a
local folder or ``s3://...`` (so that every node of a cluster reads and writes the same files):

    RUN/models/tiny/                              the tiny offline model (pipeline `tiny_model`)
    RUN/data/<dataset>/                           `data prepare`
    RUN/train/<run>/metrics.jsonl, status.json    training curves (train/metrics.py) and outcome
    RUN/train/<run>/workers/rank-<r>.json         where each training worker ran
    RUN/models/<run>/, drdo_training.json         sft, oracle, oracle-edpo-<k>, align-<name>; the
                                                  config each model was trained with
    RUN/scored/<dataset>[_edpo]/                  `score` (the one Oracle; the K e-DPO Oracles)
    RUN/samples/<prompts>/<policy>/               `generate`
    RUN/eval/<prompts>/<kind>-<a>-vs-<b>/         `eval winrate|judge` (kl-<policy>/ for `eval kl`);
                                                  the report finds results by file name at any depth
    RUN/rounds/<k>/                               online round k (k >= 1; 0: the start policy's
                                                  held-out samples), laid out as a run directory
                                                  of its own: samples/, data/, scored/, train/,
                                                  models/, eval/, plus pairs/<method>/ (the
                                                  scored samples and the pairs built from them)
                                                  and round.json (the finished round's record)
    RUN/report/report.md, figures/*.png           `report`
    RUN/pipeline.json                             each pipeline stage's status and seconds

No Ray, torch or transformers here: the planner, the report and the demo read it on the driver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import storage

METRICS_FILE = "metrics.jsonl"
TRAIN_STATUS_FILE = "status.json"
TRAINING_CONFIG_FILE = "drdo_training.json"
PIPELINE_STATUS_FILE = "pipeline.json"
ROUND_FILE = "round.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class RunLayout:
    """Where each artifact of the run directory ``root`` lives (paths as strings, joined with
    ``/`` so that ``s3://`` roots work alike)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.root.rstrip("/"))

    def absolute(self) -> RunLayout:
        """The same layout with a local root made absolute (Ray workers and actors do not share
        the driver's working directory); a remote root as it is."""
        if not storage.is_local(self.root):
            return self
        return RunLayout(str(Path(self.root.removeprefix("file://")).expanduser().resolve()))

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    # ------------------------------------------------------------------ inputs of training

    @property
    def tiny_model(self) -> str:
        return self.model("tiny")

    @property
    def data_root(self) -> str:
        return self.path("data")

    def data(self, dataset: str) -> str:
        return self.path("data", dataset)

    def scored(self, name: str) -> str:
        return self.path("scored", name)

    # ------------------------------------------------------------------ training runs

    @property
    def train_root(self) -> str:
        return self.path("train")

    def train(self, run: str) -> str:
        return self.path("train", run)

    def metrics(self, run: str) -> str:
        return storage.join(self.train(run), METRICS_FILE)

    def train_status(self, run: str) -> str:
        return storage.join(self.train(run), TRAIN_STATUS_FILE)

    def workers(self, run: str) -> str:
        return storage.join(self.train(run), "workers")

    @property
    def models_root(self) -> str:
        return self.path("models")

    def model(self, run: str) -> str:
        return self.path("models", run)

    def training_config(self, run: str) -> str:
        return storage.join(self.model(run), TRAINING_CONFIG_FILE)

    # ------------------------------------------------------------------ evaluation

    def samples(self, prompts: str, policy: str) -> str:
        return self.path("samples", prompts, policy)

    @property
    def eval_root(self) -> str:
        return self.path("eval")

    def eval(self, prompts: str, name: str) -> str:
        return self.path("eval", prompts, name)

    # ------------------------------------------------------------------ online rounds

    @property
    def rounds_root(self) -> str:
        return self.path("rounds")

    def round(self, k: int) -> RunLayout:
        """Online round ``k``, itself laid out as a run directory."""
        return RunLayout(self.path("rounds", str(k)))

    def pairs(self, method: str) -> str:
        """A round's scored samples and pairs of one method (under RUN/rounds/<k>/)."""
        return self.path("pairs", method)

    @property
    def round_record(self) -> str:
        return self.path(ROUND_FILE)

    @property
    def report(self) -> str:
        return self.path("report")

    @property
    def pipeline_status(self) -> str:
        return self.path(PIPELINE_STATUS_FILE)
