"""The one loss registry (drdo_ray.losses.LOSS_SPECS): every loss the config, the CLI and the
loop know comes from it, each spec is consistent with its settings class, and the loop's
dispatch calls each loss with the config's hyperparameters."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest
import torch

from drdo_ray import losses
from drdo_ray.cli import build_parser
from drdo_ray.config import ALIGN_LOSS_NAMES, TrainConfig
from drdo_ray.loss_settings import SETTINGS_BY_LOSS
from drdo_ray.losses import ALIGN_LOSSES, LOSS_INPUTS, LOSS_SPECS, LOSSES, dpo_loss, drdo_loss
from drdo_ray.train.stage import call_loss, loss_kwargs, reduction_of, spec_of, uses_reward_head

MODEL_OUTPUTS = {"chosen_logps", "rejected_logps", "chosen_rewards", "rejected_rewards", "chosen_nll"}
COLUMNS = {"oracle_chosen", "oracle_rejected", "ref_chosen_logps", "ref_rejected_logps"}


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**({"stage": "align", "model": "m", "data": "d", "run_dir": "r"} | kw))


def test_align_losses_are_the_align_specs_and_the_config_accepts_exactly_them() -> None:
    assert ALIGN_LOSSES == ("drdo", "dpo", "ipo", "edpo", "drdo_minus_r", "drdo_minus_c", "dpo_plus_c")
    assert ALIGN_LOSSES == ALIGN_LOSS_NAMES  # the config's torch-free copy of the names
    # ... read from the registry's torch-free half, which names each loss's settings as LOSS_SPECS does
    assert {n: s.settings for n, s in LOSS_SPECS.items()} == SETTINGS_BY_LOSS
    assert set(ALIGN_LOSSES) == {n for n, s in LOSS_SPECS.items() if s.stage == "align"}
    assert {s.stage for n, s in LOSS_SPECS.items() if n not in ALIGN_LOSSES} == {"sft", "oracle"}
    for name in ALIGN_LOSSES:
        assert _cfg(loss=name).loss == name
    for name in ("sft", "oracle", "ppo"):
        with pytest.raises(ValueError, match="unknown loss"):
            _cfg(loss=name)


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_a_loss_needs_exactly_the_columns_it_lists(name: str) -> None:
    # LOSSES[name] runs with the model's outputs and only its LOSS_INPUTS columns (the others
    # None), and fails without any one of them: the scorer and the data check rely on the list.
    t = _tensors()
    args = LOSS_SPECS[name].args

    def call(columns: set[str]) -> torch.Tensor:
        return LOSSES[name](*(t[a] if a in MODEL_OUTPUTS or a in columns else None for a in args))[0]

    assert torch.isfinite(call(set(LOSS_INPUTS[name])))
    for column in LOSS_INPUTS[name]:
        with pytest.raises((ValueError, TypeError, AttributeError)):
            call(set(LOSS_INPUTS[name]) - {column})


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_each_spec_is_consistent(name: str) -> None:
    spec = LOSS_SPECS[name]
    assert dataclasses.is_dataclass(spec) and spec.description
    assert set(spec.args) <= MODEL_OUTPUTS | COLUMNS
    assert set(spec.inputs) <= set(spec.args) & COLUMNS
    # Its settings' keywords are settings fields the function takes, and TrainConfig carries them.
    settings = spec.settings
    assert set(settings.KEYWORDS) <= set(settings.model_fields) <= set(TrainConfig.model_fields)
    keywords = typing.get_type_hints(getattr(spec.fn, "func", spec.fn))
    assert set(settings.KEYWORDS.values()) <= set(keywords)
    assert spec.stage == settings.STAGE
    assert settings().log_prob_reduction in ("mean", "sum")
    assert set(spec.terms) <= {"distill", "contrastive"}
    assert spec.terms == () or getattr(spec.fn, "func", spec.fn) is drdo_loss
    # a reward head is trained exactly where a loss reads rewards with a gradient
    assert spec.reward_head == (name == "oracle" or "distill" in spec.terms)


def test_stage_facts_come_from_the_specs() -> None:
    assert [uses_reward_head(_cfg(loss=n)) for n in ALIGN_LOSSES] == [
        LOSS_SPECS[n].reward_head for n in ALIGN_LOSSES
    ]
    assert reduction_of(_cfg(loss="drdo")) == "mean" and reduction_of(_cfg(loss="dpo_plus_c")) == "sum"
    assert reduction_of(_cfg(loss="dpo", reduction="mean")) == "mean"
    assert spec_of(_cfg(stage="oracle")) is LOSS_SPECS["oracle"]
    assert uses_reward_head(_cfg(stage="oracle")) and not uses_reward_head(_cfg(stage="sft"))
    # The three α's keep their names up to the loss function.
    assert loss_kwargs(_cfg(stage="oracle", oracle_alpha=0.2)) == {"oracle_alpha": 0.2}
    assert loss_kwargs(_cfg(loss="drdo", alpha=0.3)) == {"alpha": 0.3, "gamma": 2.0, "distill_weight": 1.0}
    assert loss_kwargs(_cfg(loss="dpo_plus_c", contrastive_alpha=0.4)) == {
        "beta": 0.1,
        "contrastive_alpha": 0.4,
        "gamma": 2.0,
    }
    # An e-DPO Oracle is an Oracle with oracle_alpha 0 (Eq. 2): no special case in the loss call.
    assert loss_kwargs(_cfg(stage="oracle", oracle_alpha=0.0, head_seed=2)) == {"oracle_alpha": 0.0}
    with pytest.raises(ValueError, match="needs a loss"):
        spec_of(_cfg())


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    names = MODEL_OUTPUTS | COLUMNS
    out = {n: -torch.rand(3, generator=gen, dtype=torch.float64) - 0.1 for n in names}
    return out


def test_dispatch_reads_the_config_hyperparameters() -> None:
    t = _tensors()
    pair = (t["chosen_logps"], t["rejected_logps"], t["ref_chosen_logps"], t["ref_rejected_logps"])
    # DPO(+C): its α is the config's contrastive_alpha, not a value fixed in the registry
    got, _ = call_loss(_cfg(loss="dpo_plus_c", contrastive_alpha=0.7, beta=0.3, gamma=1.0), t)
    want, _ = dpo_loss(*pair, beta=0.3, contrastive_alpha=0.7, gamma=1.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert got.item() != pytest.approx(dpo_loss(*pair, beta=0.3, contrastive_alpha=0.1, gamma=1.0)[0].item())
    # plain DPO never adds the contrastive term: its config refuses contrastive_alpha
    got, _ = call_loss(_cfg(loss="dpo"), t)
    assert got.item() == pytest.approx(dpo_loss(*pair)[0].item(), rel=1e-12)
    with pytest.raises(ValueError, match="contrastive_alpha belongs to the align loss dpo_plus_c"):
        _cfg(loss="dpo", contrastive_alpha=0.7)
    drdo_args = [t[n] for n in LOSS_SPECS["drdo"].args]
    got, _ = call_loss(_cfg(loss="drdo", alpha=0.4, gamma=1.5, distill_weight=0.2), t)
    want, _ = drdo_loss(*drdo_args, alpha=0.4, gamma=1.5, distill_weight=0.2)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    got, _ = call_loss(
        _cfg(loss="drdo_minus_r", alpha=0.4), {k: v for k, v in t.items() if "oracle" not in k}
    )
    assert got.item() == pytest.approx(drdo_loss(*drdo_args, alpha=0.4, distill=False)[0].item(), rel=1e-12)


def test_cli_lists_the_registry(capsys) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "align", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ALIGN_LOSSES)
    args = parser.parse_args(["train", "align", "--loss", "dpo_plus_c", "--distill-trunk", "detach"])
    assert (args.loss, args.distill_trunk) == ("dpo_plus_c", "detach")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "align", "--loss", "oracle"])


def test_losses_module_stays_free_of_config_ray_and_deepspeed() -> None:
    tree = ast.parse(Path(losses.__file__).read_text())
    imported = {n.name for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {
        "." * node.level + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }
    assert "torch" in imported
    assert not {m for m in imported if m.split(".")[0] in ("ray", "deepspeed") or "config" in m}
