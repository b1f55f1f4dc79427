"""Each stage and each loss owns its settings (drdo_ray/loss_settings.py): TrainConfig takes a
setting only where its owner trains and names the owner otherwise; the chosen loss's settings come
back as its own typed class; a pipeline section shared by several runs hands each run its own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from drdo_ray.cli import main
from drdo_ray.config import TrainConfig, describe_errors
from drdo_ray.loss_settings import (
    PAPER_DRDO,
    DistillTrunk,
    DPOPlusCSettings,
    DPOSettings,
    DRDOSettings,
    EDPOSettings,
    OracleSettings,
    SFTSettings,
)
from drdo_ray.pipeline import plan
from drdo_ray.pipeline_config import PipelineConfig

JOB = {"model": "m", "data": "d", "run_dir": "r"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"stage": "sft", "alpha": 5, "distill_trunk": "detach", "beta": 3, "oracle_alpha": 0.9},
            "alpha belongs to the align losses drdo, drdo_minus_r, drdo_minus_c, not sft; "
            "beta belongs to the align losses dpo, ipo, edpo, dpo_plus_c, not sft; "
            "distill_trunk belongs to the align losses drdo, drdo_minus_r, drdo_minus_c, not sft; "
            "oracle_alpha belongs to the oracle stage, not sft",
        ),
        (
            {"stage": "align", "loss": "dpo", "alpha": 0.5},
            "alpha belongs to the align losses drdo, drdo_minus_r, drdo_minus_c, not align (loss dpo)",
        ),
        (
            {"stage": "align", "loss": "drdo", "beta": 0.5},
            "beta belongs to the align losses dpo, ipo, edpo, dpo_plus_c, not align (loss drdo)",
        ),
        (
            {"stage": "align", "loss": "ipo", "edpo_reduce": "mean"},
            "edpo_reduce belongs to the align loss edpo,",
        ),
        (
            {"stage": "align", "loss": "drdo", "live_reference": "ref"},
            "live_reference belongs to the align losses dpo",
        ),
        ({"stage": "oracle", "reduction": "sum"}, "reduction belongs to the align stage, not oracle"),
        (
            {"stage": "align", "loss": "edpo", "head_seed": 1},
            "head_seed belongs to the oracle stage, not align",
        ),
        ({"stage": "sft", "loss": "drdo"}, "loss belongs to the align stage, not sft"),
    ],
)
def test_a_setting_of_another_stage_or_loss_is_refused_naming_its_owner(given, message):
    with pytest.raises(ValidationError) as err:
        TrainConfig(**JOB, **given)
    assert message in str(err.value)


def test_the_cli_refuses_it_in_one_line(tmp_path, capsys):
    common = ["--model", "m", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run")]
    assert main(["train", "align", "--loss", "dpo", *common, "--set", "gamma=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drdo-ray: error: invalid TrainConfig: ") and len(err.strip().splitlines()) == 1
    assert (
        "gamma belongs to the align losses drdo, drdo_minus_r, drdo_minus_c, dpo_plus_c, not align (loss dpo)"
        in err
    )


@pytest.mark.parametrize(
    ("stage", "loss", "cls"),
    [
        ("sft", None, SFTSettings),
        ("oracle", None, OracleSettings),
        ("align", "drdo", DRDOSettings),
        ("align", "drdo_minus_c", DRDOSettings),
        ("align", "ipo", DPOSettings),
        ("align", "edpo", EDPOSettings),
        ("align", "dpo_plus_c", DPOPlusCSettings),
    ],
)
def test_the_loss_settings_are_the_losses_own_class(stage, loss, cls):
    cfg = TrainConfig(**JOB, stage=stage, loss=loss)
    assert type(cfg.loss_settings) is cls
    # Each setting is the config key of the same name (an unset reduction: the loss's default).
    assert all(getattr(cfg.loss_settings, k) == getattr(cfg, k) for k in cls.model_fields if k != "reduction")


def test_typed_values_and_each_loss_own_default_reduction():
    drdo = TrainConfig(**JOB, stage="align", loss="drdo", distill_trunk="scaled:0.25", alpha=0.3)
    assert drdo.loss_settings.distill_trunk == DistillTrunk("scaled", 0.25)
    assert (drdo.reduction, drdo.loss_settings.reduction) == (None, "mean")
    dpo = TrainConfig(**JOB, stage="align", loss="dpo", beta=0.2)
    assert (dpo.loss_settings.reduction, dpo.loss_settings.beta) == ("sum", 0.2)
    assert TrainConfig(**JOB, stage="align", loss="dpo", reduction="mean").loss_settings.reduction == "mean"


def test_the_paper_drdo_settings_are_the_defaults():
    assert (
        PAPER_DRDO.alpha,
        PAPER_DRDO.gamma,
        PAPER_DRDO.distill_weight,
        str(PAPER_DRDO.distill_trunk),
        PAPER_DRDO.reduction,
    ) == (0.1, 2.0, 1.0, "full", "mean")
    assert TrainConfig(**JOB, stage="align", loss="drdo").loss_settings == PAPER_DRDO


def _pipeline(**align) -> dict:
    return {
        "run_dir": "RUN",
        "base_model": "org/model",
        "datasets": {"prefs": {"source": "tldr", "input": "sample"}},
        "train": {"lr": 1e-4},
        "sft": {"data": "prefs"},
        "oracle": {"data": "prefs", "oracle_alpha": 0.05},
        "score": {"data": "prefs"},
        "align": align,
    }


def test_a_shared_section_hands_each_run_its_own_settings():
    cfg = PipelineConfig.model_validate(
        _pipeline(runs={"drdo": None, "dpo": {"beta": 0.3}}, alpha=0.5, reduction="sum", beta=0.2)
        | {"train": {"lr": 1e-4, "gamma": 1.5}}
    )
    steps = {s.id: s.config for s in plan(cfg)}
    drdo, dpo = steps["align:drdo"], steps["align:dpo"]
    assert (drdo.alpha, drdo.gamma, drdo.reduction, drdo.lr) == (0.5, 1.5, "sum", 1e-4)
    assert (dpo.beta, dpo.reduction, dpo.lr) == (0.3, "sum", 1e-4)
    assert {"alpha", "gamma"}.isdisjoint(dpo.model_fields_set) and "beta" not in drdo.model_fields_set
    assert "gamma" not in steps["sft"].model_fields_set and steps["oracle"].oracle_alpha == 0.05


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _pipeline(runs=["drdo"], beta=0.2),
            "align.beta belongs to the align losses dpo, ipo, edpo, dpo_plus_c, not what align trains: "
            "align (drdo)",
        ),
        (
            _pipeline(runs=["dpo"]) | {"train": {"edpo_reduce": "mean"}},
            "train.edpo_reduce belongs to the align loss edpo, not what train trains: sft, oracle, align (dpo)",
        ),
        (
            _pipeline(runs={"dpo": {"alpha": 0.5}}),
            "align.runs.dpo.alpha belongs to the align losses drdo, drdo_minus_r, drdo_minus_c, not what "
            "align.runs.dpo trains: align (dpo)",
        ),
        # A stage's own section holds that stage's settings only.
        (
            _pipeline(runs=["drdo"]) | {"sft": {"data": "prefs", "beta": 0.2}},
            "sft: beta belongs to the align losses dpo,",
        ),
        (
            _pipeline(runs=["drdo"]) | {"sft": {"data": "prefs", "loss": "dpo"}},
            "sft: loss belongs to the align stage, not sft",
        ),
        (
            _pipeline(runs=["drdo"]) | {"oracle": {"data": "prefs", "alpha": 1}},
            "oracle: alpha belongs to the align losses drdo, drdo_minus_r, drdo_minus_c, not oracle",
        ),
    ],
)
def test_a_setting_no_run_of_its_section_reads_is_refused(config, message):
    with pytest.raises(ValidationError) as err:
        PipelineConfig.model_validate(config)
    assert message in describe_errors(err.value)


def test_a_setting_at_its_default_changes_nothing_and_a_dumped_config_validates_again():
    cfg = TrainConfig(**JOB, stage="align", loss="drdo", alpha=0.3, distill_trunk="scaled:0.5")
    dumped = cfg.model_dump()  # every key, each other loss's at its default
    assert dumped["beta"] == 0.1 and dumped["distill_trunk"] == "scaled:0.5"
    assert TrainConfig.model_validate(dumped) == cfg
    assert TrainConfig(**JOB, stage="sft", alpha=PAPER_DRDO.alpha).alpha == 0.1
