"""The command-line flags come from the stage configs: each flag's type, choices and help are its
config field's, every field a flag can hold has one, and a dotted flag sets one nested field."""

from __future__ import annotations

import argparse

import pytest
import yaml

from drdo_ray import config as C
from drdo_ray.bench import configs as B
from drdo_ray.bench.quality_config import BenchQualityConfig
from drdo_ray.cli import build_parser
from drdo_ray.cli_flags import FIELDS_KEY, config_from_args, flaggable
from drdo_ray.errors import UserError

# Each command and the config its flags set.
COMMANDS: dict[tuple[str, ...], type] = {
    ("models", "tiny"): C.TinyModelConfig,
    ("data", "prepare"): C.PrepareConfig,
    ("score",): C.ScoreConfig,
    ("train", "sft"): C.TrainConfig,
    ("train", "oracle"): C.TrainConfig,
    ("train", "align"): C.TrainConfig,
    ("serve",): C.ServeConfig,
    ("generate",): C.GenerateConfig,
    ("eval", "winrate"): C.WinrateConfig,
    ("eval", "judge"): C.JudgeConfig,
    ("eval", "kl"): C.KLConfig,
    ("eval", "ood"): C.OODConfig,
    ("report",): C.ReportConfig,
    ("bench", "serve"): B.BenchServeConfig,
    ("bench", "generate"): B.BenchGenerateConfig,
    ("bench", "train"): B.BenchTrainConfig,
    ("bench", "quality"): BenchQualityConfig,
}


def _subparser(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> argparse.ArgumentParser:
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def _field(cls: type, path: str):
    *parents, leaf = path.split(".")
    for name in parents:
        cls = cls.model_fields[name].default_factory
    return cls.model_fields[leaf]


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_every_flag_is_a_config_field_with_its_help(words):
    cls = COMMANDS[words]
    sub = _subparser(build_parser(), words)
    paths = sub.get_default(FIELDS_KEY)
    by_dest = {a.dest: a for a in sub._actions}
    for path in paths:
        info = _field(cls, path)
        action = by_dest[path]
        if info.description and path != "loss":  # --loss lists the registry's names instead
            assert action.help.replace("%%", "%").startswith(info.description), path
    # Every field a flag can hold has one (train: the fields of the other stages excepted).
    others = (
        {f for stage, fs in C.TrainConfig.STAGE_FIELDS.items() if stage != words[1] for f in fs}
        if words[0] == "train"
        else set()
    )
    expected = {n for n, info in cls.model_fields.items() if flaggable(info)} - others - {"stage"}
    assert expected <= set(paths), sorted(expected - set(paths))
    assert not (others & set(paths))


def test_stage_fields_name_real_train_fields():
    for fields in C.TrainConfig.STAGE_FIELDS.values():
        assert fields <= set(C.TrainConfig.model_fields)


def test_train_flags_by_stage():
    parser = build_parser()
    base = ["--model", "m", "--data", "d", "--run-dir", "r"]
    args = parser.parse_args(["train", "align", *base, "--loss", "dpo", "--beta", "0.3"])
    cfg = config_from_args(C.TrainConfig, args, "align", {"stage": "align"})
    assert (cfg.loss, cfg.beta) == ("dpo", 0.3)
    args = parser.parse_args(
        ["train", "align", *base, "--loss", "drdo", "--distill-trunk", "detach", "--no-term-grads"]
    )
    cfg = config_from_args(C.TrainConfig, args, "align", {"stage": "align"})
    assert (cfg.loss, cfg.distill_trunk.scale, cfg.term_grads) == ("drdo", 0.0, False)
    with pytest.raises(SystemExit):  # the loss is an align setting
        parser.parse_args(["train", "sft", *base, "--loss", "dpo"])
    with pytest.raises(SystemExit):  # not a registered loss
        parser.parse_args(["train", "align", *base, "--loss", "nope"])


def test_dotted_flag_sets_one_nested_field_over_the_yaml_section(tmp_path):
    path = tmp_path / "t.yaml"
    section = {
        "model": "m",
        "data": "d",
        "run_dir": "r",
        "deepspeed": {"enabled": True, "overlap_comm": True},
    }
    path.write_text(yaml.safe_dump({"align": section}))
    args = build_parser().parse_args(
        [
            "train",
            "align",
            "--config",
            str(path),
            "--zero-stage",
            "3",
            "--set",
            "deepspeed.reduce_bucket_size=7",
        ]
    )
    cfg = config_from_args(C.TrainConfig, args, "align", {"stage": "align"})
    # The section's other keys survive the flag (a flag used to replace the whole section).
    assert cfg.deepspeed.model_dump(
        include={"enabled", "overlap_comm", "zero_stage", "reduce_bucket_size"}
    ) == {
        "enabled": True,
        "overlap_comm": True,
        "zero_stage": 3,
        "reduce_bucket_size": 7,
    }


def test_list_flags_are_comma_separated_and_checked():
    parser = build_parser()
    args = parser.parse_args(
        ["generate", "--model", "m", "--prompts", "p", "--out", "o", "--temperatures", "0.2,0.7"]
    )
    assert config_from_args(C.GenerateConfig, args, "generate").temperatures == [0.2, 0.7]
    for bad, message in (("warm", "--temperatures expects comma-separated float values"), (",", "is empty")):
        with pytest.raises(UserError, match=message):  # one line from main(), not argparse's usage
            config_from_args(
                C.GenerateConfig, parser.parse_args(["generate", "--temperatures", bad]), "generate"
            )
    args = parser.parse_args(["bench", "generate", "--engines", "vllm,hf_generate"])
    assert config_from_args(B.BenchGenerateConfig, args, "bench_generate").engines == ["vllm", "hf_generate"]


def test_flags_override_yaml_and_set_overrides_flags(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        yaml.safe_dump({"generate": {"model": "m", "prompts": "p", "out": "o", "top_p": 0.5, "seed": 3}})
    )
    args = build_parser().parse_args(
        ["generate", "--config", str(path), "--top-p", "0.6", "--seed", "4", "--set", "seed=5"]
    )
    cfg = config_from_args(C.GenerateConfig, args, "generate")
    assert (cfg.top_p, cfg.seed) == (0.6, 5)
