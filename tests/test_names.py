"""One meaning per name: the e-DPO Oracles are `edpo_oracles` everywhere and are named by one
function (the CLI's fit_oracles and the pipeline agree); a filter on the samples' temperature is
`at_temperature` (a sampling temperature keeps `temperature`); an old key names its new one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drdo_ray.artifacts import edpo_oracle_name
from drdo_ray.cli import main
from drdo_ray.config import (
    JudgeConfig,
    KLConfig,
    OODConfig,
    StageConfig,
    TrainConfig,
    WinrateConfig,
    load_config,
)
from drdo_ray.errors import UserError
from drdo_ray.pipeline import plan
from drdo_ray.pipeline_config import PipelineConfig

BASE = {
    "run_dir": "RUN",
    "base_model": "org/model",
    "datasets": {
        "prefs": {"source": "tldr", "input": "sample"},
        "sft_data": {"source": "tldr_sft", "input": "sample"},
    },
    "sft": {"data": "sft_data"},
    # The main Oracle's own settings: oracle_alpha and head_seed must not reach the e-DPO Oracles.
    "oracle": {"data": "prefs", "oracle_alpha": 0.05, "head_seed": 7, "lr": 3e-5},
    "edpo_oracles": 3,
    "score": {"data": "prefs"},
    "align": {"runs": ["drdo", "edpo"]},
}
TRAIN = {"model": "m", "data": "d", "run_dir": "r"}


def test_edpo_oracle_name():
    assert edpo_oracle_name("oracle", 0) == "oracle-edpo-0"
    assert edpo_oracle_name("rm", 12) == "rm-edpo-12"


def test_pipeline_plans_the_edpo_oracles():
    steps = {s.id: s for s in plan(PipelineConfig.model_validate(BASE))}
    members = [sid for sid in steps if sid.startswith("edpo_oracles")]
    assert members == ["edpo_oracles:0", "edpo_oracles:1", "edpo_oracles:2"]
    main = steps["oracle"].config
    assert (main.name, main.oracle_alpha, main.head_seed, main.edpo_oracles) == ("oracle", 0.05, 7, 0)
    for k, sid in enumerate(members):
        s = steps[sid]
        assert s.group == "edpo_oracles"
        assert s.output == f"RUN/models/{edpo_oracle_name('oracle', k)}" == f"RUN/models/oracle-edpo-{k}"
        c = s.config
        assert (c.name, c.stage, c.oracle_alpha, c.head_seed, c.edpo_oracles) == (
            f"oracle-edpo-{k}",
            "oracle",
            0.0,
            k,
            0,
        )
        assert c.lr == 3e-5 and c.data == main.data  # the oracle section's other settings
    score = steps["score:prefs_edpo"]
    assert score.output == "RUN/scored/prefs_edpo"
    assert score.config.oracles == [steps[sid].output for sid in members]
    assert steps["align:edpo"].config.data == "RUN/scored/prefs_edpo"
    assert steps["align:drdo"].config.data == "RUN/scored/prefs"


def test_fit_oracles_trains_what_the_pipeline_plans(monkeypatch):
    # The CLI's `train oracle --edpo-oracles K` (fit_oracles) and the pipeline build the same
    # member configs from the same Oracle config: same names, oracle_alpha 0, head seeds 0..K-1.
    from drdo_ray.train import ray_trainer

    trained: list[TrainConfig] = []
    monkeypatch.setattr(ray_trainer, "fit", lambda cfg, console=None: trained.append(cfg) or {})
    steps = {s.id: s.config for s in plan(PipelineConfig.model_validate(BASE))}
    main_oracle = steps["oracle"]

    assert len(ray_trainer.fit_oracles(main_oracle)) == 1  # edpo_oracles 0: the one Oracle
    assert trained == [main_oracle]
    trained.clear()

    ray_trainer.fit_oracles(main_oracle.model_copy(update={"edpo_oracles": 3}))
    planned = [steps[f"edpo_oracles:{k}"] for k in range(3)]
    assert [c.model_dump() for c in trained] == [c.model_dump() for c in planned]
    assert [c.oracle_alpha for c in trained] == [0.0] * 3 and [c.head_seed for c in trained] == [0, 1, 2]

    trained.clear()  # without a name, the CLI's base is "oracle" too; with one, it is that name
    ray_trainer.fit_oracles(TrainConfig(stage="oracle", edpo_oracles=2, **TRAIN))
    assert [c.name for c in trained] == [edpo_oracle_name("oracle", k) for k in range(2)]
    trained.clear()
    ray_trainer.fit_oracles(TrainConfig(stage="oracle", name="rm", edpo_oracles=2, **TRAIN))
    assert [c.name for c in trained] == ["rm-edpo-0", "rm-edpo-1"]


@pytest.mark.parametrize(
    ("cls", "data", "old", "new"),
    [
        (TrainConfig, {"stage": "oracle", **TRAIN, "ensemble": 3}, "ensemble", "edpo_oracles"),
        (PipelineConfig, BASE | {"ensemble": 3}, "ensemble", "edpo_oracles"),
        (
            KLConfig,
            {"policy": "p", "reference": "r", "samples": "s", "out": "o", "temperature": 0.7},
            "temperature",
            "at_temperature",
        ),
        (OODConfig, {"result": "r", "temperature": 0.7}, "temperature", "at_temperature"),
        (
            WinrateConfig,
            {"a": "a", "b": "b", "oracle": "o", "out": "o", "ood_temperature": 0.7},
            "ood_temperature",
            "ood_at_temperature",
        ),
        (
            JudgeConfig,
            {"a": "a", "b": "b", "out": "o", "ood_temperature": 0.7},
            "ood_temperature",
            "ood_at_temperature",
        ),
    ],
)
def test_an_old_key_names_the_new_one(cls, data, old, new):
    with pytest.raises(ValidationError, match=f"`{old}` was renamed to `{new}`"):
        cls.model_validate(data)


def _config_classes() -> list[type[StageConfig]]:
    import drdo_ray.bench.configs
    import drdo_ray.bench.quality_config  # noqa: F401  (their classes join the subclass tree)

    found, todo = [], [StageConfig]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_rename_points_at_a_field_that_exists():
    # A rename whose new name is no field (or whose old name still is one) would turn a helpful
    # message into a dead end. A pipeline section may name a key the pipeline sets (derived).
    checked = 0
    for cls in _config_classes():
        for old, new in cls.renamed.items():
            known = cls.model_fields.keys() | getattr(cls, "derived", set())
            assert new in known and old not in cls.model_fields, (cls.__name__, old, new)
            checked += 1
    assert checked >= 6


def test_only_sampling_settings_are_called_temperature():
    # A filter on the samples' temperature is *at_temperature (None: every temperature); a field
    # named temperature(s) sets how something samples.
    declared = {  # where each field is declared (a subclass inherits it)
        (cls.__name__, name)
        for cls in _config_classes()
        for name in cls.model_fields
        if "temperature" in name and name in vars(cls).get("__annotations__", {})
    }
    filters = {(c, n) for c, n in declared if n.endswith("at_temperature")}
    assert declared - filters == {
        ("JudgeSettings", "temperature"),
        ("GenerateSettings", "temperatures"),
        ("BenchGenerateConfig", "temperature"),
        ("BenchQualityConfig", "temperatures"),
        ("BenchQualityConfig", "online_temperature"),  # the online regime's rounds' sampling
        ("OnlineSection", "temperature"),  # the rounds' sampling
        ("OnlineSection", "heldout_temperatures"),  # the held-out prompts' sampling
    }
    assert filters == {
        ("KLSettings", "at_temperature"),
        ("OODConfig", "at_temperature"),
        ("EvalStats", "ood_at_temperature"),
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ensemble=3", "invalid PipelineConfig: `ensemble` was renamed to `edpo_oracles`"),
        ("oracle.ensemble=3", "oracle: `ensemble` was renamed to `edpo_oracles`"),
        ("train.ensemble=3", "train: `ensemble` was renamed to `edpo_oracles`"),
        ("align.ensemble=3", "align: `ensemble` was renamed to `edpo_oracles`"),
        ("kl.temperature=0.7", "kl: `temperature` was renamed to `at_temperature`"),
        ("winrate.ood_temperature=0.7", "`ood_temperature` was renamed to `ood_at_temperature`"),
        ("judge.ood_temperature=0.7", "`ood_temperature` was renamed to `ood_at_temperature`"),
    ],
)
def test_old_keys_in_a_pipeline_yaml_name_the_new_ones(tmp_path, override, message):
    path = tmp_path / "p.yaml"
    body = BASE | {"generate": {"prompts": ["prefs"]}, "winrate": {}, "judge": {}, "kl": {}}
    path.write_text(yaml.safe_dump({"pipeline": body}))
    with pytest.raises(UserError, match=r"^invalid PipelineConfig: ") as err:
        load_config(PipelineConfig, config_file=str(path), section="pipeline", overrides=[override])
    assert message in str(err.value)


def test_an_old_key_in_an_align_run_names_the_new_one():
    with pytest.raises(ValidationError, match="`ensemble` was renamed to `edpo_oracles`") as err:
        PipelineConfig.model_validate(BASE | {"align": {"runs": {"drdo": {"ensemble": 3}}}})
    assert err.value.errors()[0]["loc"] == ("align", "runs", "drdo")


def test_edpo_oracles_belong_to_the_oracle_stage():
    with pytest.raises(ValidationError, match=r"edpo_oracles belongs to the oracle stage, not align"):
        TrainConfig(stage="align", loss="drdo", edpo_oracles=3, **TRAIN)
    with pytest.raises(ValidationError, match="not sft"):
        TrainConfig(stage="sft", edpo_oracles=1, **TRAIN)
    TrainConfig(stage="align", loss="drdo", edpo_oracles=0, **TRAIN)  # the default changes nothing: accepted
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        TrainConfig(stage="oracle", edpo_oracles=-1, **TRAIN)
    # In a pipeline the number of e-DPO Oracles is the top-level key, never a section's.
    for change in ({"train": {"edpo_oracles": 3}}, {"oracle": {"data": "prefs", "edpo_oracles": 3}}):
        with pytest.raises(ValidationError, match="edpo_oracles is a top-level pipeline key"):
            PipelineConfig.model_validate(BASE | change)
    with pytest.raises(ValidationError, match=r"edpo_oracles: .* add one"):
        PipelineConfig.model_validate(BASE | {"oracle": None, "score": None, "align": None})


def test_cli_refuses_old_keys_and_edpo_oracles_outside_the_oracle_stage(tmp_path, capsys):
    common = ["--model", "m", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run")]
    assert main(["train", "oracle", *common, "--set", "ensemble=3"]) == 2
    assert "`ensemble` was renamed to `edpo_oracles`" in capsys.readouterr().err
    assert main(["train", "align", "--loss", "drdo", *common, "--set", "edpo_oracles=3"]) == 2
    assert "belongs to the oracle stage" in capsys.readouterr().err
    # The flag is the field's name (validated before anything trains).
    assert main(["train", "oracle", *common, "--edpo-oracles", "-1"]) == 2
    assert "edpo_oracles: Input should be greater than or equal to 0" in capsys.readouterr().err
    assert not Path(tmp_path / "run").exists()
