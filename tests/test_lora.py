"""LoRA adapters (peft) through the one training loop, called directly: only the adapters and the
reward head train, the live reference is the base model read through the adapters switched off,
a LoRA checkpoint holds what trains and resumes to the uninterrupted run's weights, and the
exported folder (merged by default, adapters alone by a setting) loads with plain transformers
and gives the trained model's log-probs. The optimizer and attention settings' refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from interrupted_run import checkpoint_then_die
from transformers import AutoModelForCausalLM

from drdo_ray.artifacts import check_model
from drdo_ray.attention import resolve_attention
from drdo_ray.cli import main
from drdo_ray.config import TrainConfig
from drdo_ray.errors import UserError
from drdo_ray.models import PolicyWithRewardHead, pair_forward
from drdo_ray.models.lora import base_model
from drdo_ray.train.batches import Collator
from drdo_ray.train.engine import World
from drdo_ray.train.loop import load_model, load_reference, run

pytest.importorskip("peft")

ORACLE = ("oracle_chosen", "oracle_rejected")
REF = ("ref_chosen_logps", "ref_rejected_logps")


@pytest.fixture
def pairs(pair_columns):
    """feed(extra): the four pairs as two collated micro-batches carrying the ``extra`` columns."""
    columns, pad = pair_columns

    def feed(extra: tuple[str, ...]) -> list[dict[str, torch.Tensor]]:
        collate = Collator(pad_id=pad, pairs=True, extra=extra)
        return [collate({k: v[i : i + 2] for k, v in columns.items()}) for i in (0, 2)]

    return feed


def _cfg(tiny_model_dir, tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        stage="align",
        loss="drdo",
        model=str(tiny_model_dir),
        data="unused",
        run_dir=str(tmp_path / "run"),
        micro_batch_size=2,
        num_workers=1,
        max_steps=4,
        lr=5e-3,
        weight_decay=0.0,
        checkpoint_every=0,
        shuffle=False,
        lora={"enabled": True, "rank": 4, "alpha": 8, "dropout": 0.0},
    )
    return TrainConfig(**(base | kw))


def _train(cfg: TrainConfig, feed, **kw) -> tuple[dict, torch.nn.Module]:
    """Run the loop; the final metrics and the trained model as the export hook sees it."""
    trained: dict = {}
    final = run(
        cfg,
        batches=lambda epoch: feed,
        num_rows=4,
        world=World(),
        export=lambda model, engine: trained.update(model=model),
        **kw,
    )
    return final, trained["model"]


@pytest.mark.parametrize(("stage", "loss"), [("align", "drdo"), ("align", "dpo"), ("oracle", None)])
def test_only_the_adapters_and_the_reward_head_train(pairs, tiny_model_dir, tmp_path, stage, loss):
    feed = pairs({"drdo": ORACLE, "dpo": REF}.get(loss, ()))  # DPO: precomputed reference log-probs
    cfg = _cfg(tiny_model_dir, tmp_path, stage=stage, loss=loss)
    before = {k: v.clone() for k, v in load_model(cfg).state_dict().items()}
    final, model = _train(cfg, feed)
    assert final["status"] == "finished" and np.isfinite(final["loss"])
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapters = {k for k in before if ".lora_A." in k or ".lora_B." in k}
    head = {"reward_head.weight"} if stage == "oracle" or loss == "drdo" else set()
    assert adapters and changed == adapters | head
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapters | head  # the base frozen, the head (bias aside) fully trainable


def _pair_logps(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = pair_forward(model.eval(), batch, reduction="sum")
    return torch.cat([out.chosen_logps, out.rejected_logps])


def test_the_live_reference_is_the_base_model_with_the_adapters_off(pairs, tiny_model_dir, tmp_path):
    """No second copy: the reference is the policy itself, read with its adapters off, which gives
    the base model's log-probs after training moved the adapters (and the policy's differ)."""
    feed = pairs(())
    cfg = _cfg(tiny_model_dir, tmp_path, loss="dpo", live_reference=str(tiny_model_dir))
    final, model = _train(cfg, feed)
    assert final["status"] == "finished" and final["loss"] < 0.69  # moved off log 2
    assert load_reference(cfg, World(), model) is model
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.train()
    with base_model(model) as frozen:
        assert not frozen.training
        reference = _pair_logps(frozen, feed[0])
    assert model.training  # restored
    torch.testing.assert_close(reference, _pair_logps(base, feed[0]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_pair_logps(model, feed[0]), reference, atol=1e-3)


@pytest.mark.parametrize("stage", ["align", "oracle"])
def test_the_exported_folder_gives_the_trained_models_log_probs(pairs, tiny_model_dir, tmp_path, stage):
    """models/<run>/: merged by default, a plain transformers folder like a full fine-tune's; with
    lora.export=adapters the adapters alone, which transformers (with peft) loads on the base.
    Both give the log-probs (and the Oracle its rewards) of the base + adapters that trained."""
    from drdo_ray.train.ray_trainer import export_fn, model_dir

    feed = pairs(ORACLE)
    outputs = {}
    for export in ("merged", "adapters"):
        lora = {"enabled": True, "rank": 4, "alpha": 8, "dropout": 0.0, "export": export}
        cfg = _cfg(tiny_model_dir, tmp_path / export, stage=stage, loss="drdo" if stage == "align" else None)
        cfg = cfg.model_copy(update={"lora": cfg.lora.model_copy(update=lora), "name": stage})
        _, model = _train(cfg, feed)
        export_fn(cfg, World())(model, None)
        outputs[export] = Path(model_dir(cfg))
        trained = model.eval()
    files = {e: {p.name for p in folder.iterdir()} for e, folder in outputs.items()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files["merged"]
    assert not any(name.startswith("adapter_") for name in files["merged"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files["adapters"]
    assert "model.safetensors" not in files["adapters"]
    assert ("reward_head.safetensors" in files["merged"]) == (stage == "oracle")
    config = json.loads((outputs["adapters"] / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    with pytest.raises(UserError, match="holds LoRA adapters only"):  # what a later stage says
        check_model(str(outputs["adapters"]), role="oracle")

    expected = _pair_logps(trained, feed[0])  # the last trained model: adapters export, same seed
    for export, folder in outputs.items():
        plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        # transformers loads an adapters folder's base and puts the adapters on it (peft layers)
        assert any(".lora_A." in name for name, _ in plain.named_parameters()) == (export == "adapters")
        torch.testing.assert_close(_pair_logps(plain, feed[0]), expected, rtol=1e-5, atol=1e-4)
    if stage == "oracle":
        oracle = PolicyWithRewardHead.from_pretrained(outputs["merged"], torch_dtype=torch.float32).eval()
        with torch.no_grad():
            torch.testing.assert_close(
                pair_forward(oracle, feed[0], reduction="mean").chosen_rewards,
                pair_forward(trained, feed[0], reduction="mean").chosen_rewards,
                rtol=1e-5,
                atol=1e-5,
            )


def test_resume_from_a_lora_checkpoint_reproduces_the_uninterrupted_run(pairs, tiny_model_dir, tmp_path):
    feed = pairs(ORACLE)
    cfg = _cfg(tiny_model_dir, tmp_path, checkpoint_every=2)
    _, full = _train(cfg, feed)
    expected = {k: v.clone() for k, v in full.state_dict().items()}

    checkpoint_then_die(cfg, feed, 4, 2, tmp_path / "ckpt")
    saved = torch.load(tmp_path / "ckpt" / "torch_state.pt", weights_only=False)["model"]
    # The checkpoint holds what trains: the adapters and the head, not the frozen base.
    assert set(saved) == {n for n, p in full.named_parameters() if p.requires_grad}
    final, resumed = _train(cfg, feed, restore_dir=tmp_path / "ckpt")
    assert (final["global_step"], final["consumed_samples"]) == (4, 8)
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ optimizer and attention


def _train_cli(tiny_model_dir, tmp_path, *flags: str) -> int:
    paths = ["--model", str(tiny_model_dir), "--data", str(tmp_path), "--run-dir", str(tmp_path)]
    return main(["train", "sft", *paths, *flags])


def test_paged_adamw_on_cpu_is_a_one_line_error_before_any_worker(tiny_model_dir, tmp_path, capsys):
    assert _train_cli(tiny_model_dir, tmp_path, "--optimizer", "paged_adamw_32bit") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "paged_adamw_32bit" in err and "CPU" in err
    assert not (tmp_path / "train").exists()  # nothing started
    assert TrainConfig(
        stage="sft", model="m", data="d", run_dir="r", optimizer="paged_adamw_32bit", use_gpu=True
    )


def test_an_unknown_attn_implementation_is_refused(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _train_cli(tiny_model_dir, tmp_path, "--attn-implementation", "flash_attention_3")
    assert exit_.value.code == 2 and "invalid choice: 'flash_attention_3'" in capsys.readouterr().err
    assert _train_cli(tiny_model_dir, tmp_path, "--set", "attn_implementation=xformers") == 2
    assert "attn_implementation" in capsys.readouterr().err


def test_an_unavailable_attention_is_an_error_or_a_logged_fallback(tiny_model_dir, tmp_path, caplog):
    cfg = _cfg(tiny_model_dir, tmp_path, attn_implementation="flash_attention_2")
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA GPU"):
        resolve_attention(cfg, gpu=False, stage="train align")
    fallback = cfg.model_copy(update={"attn_fallback": "sdpa"})
    with caplog.at_level(logging.WARNING, logger="drdo_ray.attention"):
        assert resolve_attention(fallback, gpu=False, stage="train align") == "sdpa"
    assert "using sdpa" in caplog.text
    for choice in ("eager", "sdpa"):  # what the worker loads is what was asked for
        model = load_model(_cfg(tiny_model_dir, tmp_path, attn_implementation=choice))
        assert model.lm.config._attn_implementation == choice
