"""`drdo-ray eval kl`: the token-averaged KL of a policy from its reference is exactly zero for
identical models and positive otherwise, equals a brute-force computation, and runs through
the CLI on Ray Data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drdo_ray.cli import main
from drdo_ray.eval.kl import response_ids_for_kl, sample_kl

TEXTS = ["the cat sat on the mat", "a longer answer about the weather and the sea", "ok"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """The tiny model as the SFT reference, and a 'policy': the same model with perturbed weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("kl")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "policy")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "policy")
    gen = root / "gen"
    gen.mkdir()
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": f"Question {i}: tell me something.",
            "chat": i == 2,
            "reference": None,
            "model": str(root / "policy"),
            "temperature": t,
            "sample_idx": 0,
            "text": text,
            "num_tokens": 5,
            "finish_reason": "length" if i == 1 else "stop",
        }
        for i, text in enumerate(TEXTS)
        for t in (0.7, 0.9)
    ]
    rows.append({**rows[0], "prompt_id": "empty", "text": "", "finish_reason": "length"})  # nothing sampled
    (gen / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (gen / "generation.json").write_text(
        json.dumps({"model": str(root / "policy"), "temperatures": [0.7, 0.9]})
    )
    return {"root": root, "reference": tiny_model_dir, "policy": root / "policy", "gen": gen}


def _encode(path: Path, finish: list[str | None]):
    from transformers import AutoTokenizer

    from drdo_ray.data.tokenize import encode_prompt

    tok = AutoTokenizer.from_pretrained(path)
    prompts = [
        encode_prompt(tok, f"Question {i}: tell me something.", chat=i == 2) for i in range(len(TEXTS))
    ]
    responses = [response_ids_for_kl(tok, t, f) for t, f in zip(TEXTS, finish)]
    return tok, prompts, responses


def test_kl_zero_for_identical_positive_otherwise_and_matches_brute_force(models):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(models["reference"]).eval()
    policy = AutoModelForCausalLM.from_pretrained(models["policy"]).eval()
    tok, prompts, responses = _encode(models["reference"], ["stop", "length", None])
    assert responses[1][-1] != tok.eos_token_id and responses[0][-1] == tok.eos_token_id  # no EOS after a cut

    same = sample_kl(ref, ref, prompts, responses, pad_id=tok.pad_token_id)
    assert [s["kl"] for s in same] == [0.0, 0.0, 0.0] and all(s["kl_sampled"] == 0.0 for s in same)
    diff = sample_kl(policy, ref, prompts, responses, pad_id=tok.pad_token_id)
    assert all(s["kl"] > 1e-4 for s in diff)
    assert [s["tokens"] for s in diff] == [len(r) for r in responses]

    # Brute force, one sequence at a time: sum_v p (log p - log q) at each response position.
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            lp = torch.log_softmax(policy(ids).logits[0].double(), -1)
            lq = torch.log_softmax(ref(ids).logits[0].double(), -1)
        positions = range(len(prompt) - 1, len(prompt) + len(response) - 1)
        per_token = [(lp[t].exp() * (lp[t] - lq[t])).sum().item() for t in positions]
        assert diff[i]["kl"] == pytest.approx(sum(per_token) / len(per_token), rel=1e-4)


def test_kl_cli_on_ray(models, ray_session):
    out = models["root"] / "eval-kl"
    argv = [
        "eval",
        "kl",
        "--policy",
        str(models["policy"]),
        "--reference",
        str(models["reference"]),
        "--samples",
        str(models["gen"]),
        "--out",
        str(out),
        "--label",
        "DRDO (γ=2)",
        "--step",
        "100",
        "--batch-size",
        "3",
        "--set",
        "num_gpus_per_actor=0",
    ]
    assert main(argv) == 0
    result = json.loads((out / "kl.json").read_text())
    assert result["label"] == "DRDO (γ=2)" and result["step"] == 100
    assert result["n_samples"] == 6 and result["skipped_empty"] == 1
    assert result["kl"] > 0 and result["kl_token_weighted"] > 0
    assert set(result["by_temperature"]) == {"0.7", "0.9"}
    # Same text at both temperatures: the same KL.
    assert result["by_temperature"]["0.7"]["kl"] == pytest.approx(
        result["by_temperature"]["0.9"]["kl"], rel=1e-5
    )
    per_sample = [json.loads(x) for x in (out / "kl_samples.jsonl").read_text().splitlines()]
    assert len(per_sample) == 7 and per_sample[-1]["tokens"] == 0 and per_sample[-1]["kl"] is None
    assert result["kl"] == pytest.approx(sum(s["kl"] for s in per_sample[:-1]) / 6)

    # The SFT model against itself, loaded twice by the actor: exactly zero.
    same = models["root"] / "eval-kl-same"
    assert (
        main(
            [
                "eval",
                "kl",
                "--policy",
                str(models["reference"]),
                "--reference",
                str(models["reference"]),
                "--samples",
                str(models["gen"]),
                "--out",
                str(same),
                "--at-temperature",
                "0.7",
                "--set",
                "num_gpus_per_actor=0",
            ]
        )
        == 0
    )
    zero = json.loads((same / "kl.json").read_text())
    assert zero["kl"] == 0.0 and zero["kl_sampled"] == 0.0 and zero["n_samples"] == 3
    assert zero["at_temperature"] == 0.7


def test_kl_bad_inputs_are_one_line_errors(models, capsys):
    base = [
        "eval",
        "kl",
        "--policy",
        str(models["policy"]),
        "--reference",
        str(models["reference"]),
        "--out",
        str(models["root"] / "bad"),
    ]
    assert main([*base, "--samples", str(models["gen"]), "--at-temperature", "0.2"]) == 2
    assert "no samples at temperature 0.2" in capsys.readouterr().err
    assert main([*base, "--samples", str(models["root"] / "nope")]) == 2
    assert "sample set not found" in capsys.readouterr().err
