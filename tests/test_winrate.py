"""`drdo-ray eval winrate` on Ray Data with a tiny Oracle: rewards equal a direct forward pass,
pairs match on (prompt_id, temperature, sample_idx) with unequal sample counts, identical
responses tie, `--b reference` compares with the prompts' references, OOD bins are written and
can be rebinned; bad inputs are one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drdo_ray.cli import main

PROMPTS = [
    (
        "p0",
        "SUBREDDIT: r/advice\n\nTITLE: my roommate\n\nPOST: my roommate never cleans the kitchen.\n\nTL;DR:",
        False,
        "roommate does not clean",
    ),
    (
        "p1",
        "SUBREDDIT: r/cats\n\nTITLE: new cat\n\nPOST: " + "the cat sleeps all day and " * 12 + "\n\nTL;DR:",
        False,
        "cat sleeps a lot",
    ),
    ("p2", "Write a short poem about the sea.", True, None),
]
TEMPS = (0.2, 0.7)


def _rows(model: str, texts: dict[tuple[str, float, int], str]) -> list[dict]:
    rows = []
    for (pid, temp, idx), text in texts.items():
        _, prompt, chat, ref = next(p for p in PROMPTS if p[0] == pid)
        rows.append(
            {
                "prompt_id": pid,
                "prompt": prompt,
                "chat": chat,
                "reference": ref,
                "model": model,
                "temperature": temp,
                "sample_idx": idx,
                "text": text,
                "num_tokens": len(text.split()),
                "finish_reason": "stop",
            }
        )
    return rows


def _write(folder: Path, rows: list[dict], model: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "generation.json").write_text(
        json.dumps({"model": model, "temperatures": list(TEMPS), "top_p": 0.8})
    )
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_session, tiny_model_dir) -> dict[str, Path]:
    from transformers import AutoTokenizer

    from drdo_ray.models import PolicyWithRewardHead

    root = tmp_path_factory.mktemp("winrate")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    oracle = PolicyWithRewardHead.from_pretrained(tiny_model_dir, head_seed=1).save_pretrained(
        root / "oracle", tokenizer=tok
    )
    a_texts = {
        (pid, t, i): f"policy a says {pid} {t} {i} " + "word " * (3 * i + int(10 * t))
        for pid, *_ in PROMPTS
        for t in TEMPS
        for i in (0, 1)
    }
    b_texts = {
        k: f"policy b answers {k[0]} with something else {k[2]}" for k in a_texts if k != ("p2", 0.7, 1)
    }
    b_texts[("p0", 0.2, 0)] = a_texts[("p0", 0.2, 0)]  # identical responses: a tie by construction
    return {
        "root": root,
        "oracle": oracle,
        "model": tiny_model_dir,
        "a": _write(root / "gen_a", _rows("runs/models/align-drdo", a_texts), "runs/models/align-drdo"),
        "b": _write(root / "gen_b", _rows("runs/models/align-dpo", b_texts), "runs/models/align-dpo"),
    }


def _direct_rewards(oracle: Path, rows: list[tuple[str, bool, str]]) -> list[float]:
    """r*(x, y) of each (prompt, chat, text) with a plain in-process forward pass, no Ray."""
    from transformers import AutoTokenizer

    from drdo_ray.artifacts import pad_id
    from drdo_ray.data.tokenize import encode_prompt, encode_response
    from drdo_ray.models import PolicyWithRewardHead
    from drdo_ray.scoring import sequence_rewards

    model = PolicyWithRewardHead.from_pretrained(oracle).freeze()
    tok = AutoTokenizer.from_pretrained(oracle)
    return sequence_rewards(
        model,
        [encode_prompt(tok, p, chat=c) for p, c, _ in rows],
        [encode_response(tok, t) for *_, t in rows],
        pad_id=pad_id(str(oracle)),
    )


def _winrate_argv(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """`eval winrate` of the fixture's A over B with its Oracle, into ``out``."""
    a, b, oracle = (str(setup[k]) for k in ("a", "b", "oracle"))
    return ["eval", "winrate", "--a", a, "--b", b, "--oracle", oracle, "--out", str(out), *extra]


def test_winrate_matches_direct_scoring_and_pairs_by_key(setup):
    out = setup["root"] / "eval-a-vs-b"
    argv = _winrate_argv(
        setup, out, "--batch-size", "4", "--set", "bootstrap=300", "--set", "num_gpus_per_actor=0"
    )
    assert main(argv) == 0
    result = json.loads((out / "winrate.json").read_text())
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]

    assert result["n"] == len(pairs) == 11
    assert result["unpaired"] == {"a": 1, "b": 0}
    assert result["a"]["name"] == "align-drdo" and result["b"]["name"] == "align-dpo"
    assert result["a"]["generation"]["top_p"] == 0.8
    assert set(result["by_temperature"]) == {"0.2", "0.7"}
    assert result["by_temperature"]["0.7"]["n"] == 5

    # Every reward equals a direct forward pass; outcomes follow r_A > r_B.
    a_rows = {
        (r["prompt_id"], r["temperature"], r["sample_idx"]): r
        for r in map(json.loads, (setup["a"] / "samples.jsonl").read_text().splitlines())
    }
    b_rows = {
        (r["prompt_id"], r["temperature"], r["sample_idx"]): r
        for r in map(json.loads, (setup["b"] / "samples.jsonl").read_text().splitlines())
    }
    keys = [(p["prompt_id"], p["temperature"], p["sample_idx"]) for p in pairs]
    direct_a = _direct_rewards(
        setup["oracle"], [(a_rows[k]["prompt"], a_rows[k]["chat"], a_rows[k]["text"]) for k in keys]
    )
    direct_b = _direct_rewards(
        setup["oracle"], [(b_rows[k]["prompt"], b_rows[k]["chat"], b_rows[k]["text"]) for k in keys]
    )
    for p, ra, rb in zip(pairs, direct_a, direct_b):
        assert p["reward_a"] == pytest.approx(ra, abs=1e-4) and p["reward_b"] == pytest.approx(rb, abs=1e-4)
    tie = next(p for p in pairs if (p["prompt_id"], p["temperature"], p["sample_idx"]) == ("p0", 0.2, 0))
    assert tie["outcome"] == "tie" and tie["reward_a"] == tie["reward_b"]
    expected = {"win": 0, "tie": 0, "loss": 0}
    for p in pairs:
        expected[
            "win" if p["reward_a"] > p["reward_b"] else "loss" if p["reward_a"] < p["reward_b"] else "tie"
        ] += 1
    assert (result["wins"], result["ties"], result["losses"]) == (
        expected["win"],
        expected["tie"],
        expected["loss"],
    )
    assert result["win_rate"] == pytest.approx((expected["win"] + expected["tie"] / 2) / 11)
    lo, hi = result["ci95"]
    assert lo <= result["win_rate"] <= hi

    # Reward advantage over the references: prompts p0 and p1 have one, p2 does not.
    with_ref = [p for p in pairs if p["reward_ref"] is not None]
    assert result["reward_advantage"]["n"] == len(with_ref) == 8
    assert result["reward_advantage"]["a"]["mean"] == pytest.approx(
        sum(p["reward_a"] - p["reward_ref"] for p in with_ref) / 8
    )
    assert result["mean_reward_a"] == pytest.approx(sum(direct_a) / 11, abs=1e-4)

    ood = json.loads((out / "ood.json").read_text())
    assert (
        ood["n"] == 11 and ood["bin_width"] == 50 and (out / "ood.png").exists() and (out / "ood.md").exists()
    )
    assert all(p["prompt_tokens"] > 0 for p in pairs)
    assert main(["eval", "ood", "--result", str(out), "--bin-width", "20", "--at-temperature", "0.7"]) == 0
    rebinned = json.loads((out / "ood.json").read_text())
    assert rebinned["bin_width"] == 20 and rebinned["n"] == 5 and rebinned["at_temperature"] == 0.7


def test_winrate_against_references(setup):
    out = setup["root"] / "eval-a-vs-ref"
    argv = [
        "eval",
        "winrate",
        "--a",
        str(setup["a"]),
        "--b",
        "reference",
        "--oracle",
        str(setup["oracle"]),
        "--out",
        str(out),
        "--set",
        "bootstrap=200",
        "--set",
        "num_gpus_per_actor=0",
    ]
    assert main(argv) == 0
    result = json.loads((out / "winrate.json").read_text())
    assert result["b"] == {"name": "reference", "samples": "reference"}
    assert result["n"] == 8 and result["unpaired"]["a"] == 4  # p2 has no reference
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert all(p["reward_b"] == p["reward_ref"] for p in pairs)
    assert result["reward_advantage"]["a"]["mean"] == pytest.approx(result["mean_margin"])
    assert "b" not in result["reward_advantage"]


def test_winrate_bad_inputs_are_one_line_errors(setup, capsys):
    base = ["eval", "winrate", "--a", str(setup["a"]), "--out", str(setup["root"] / "bad")]
    assert main([*base, "--b", str(setup["b"]), "--oracle", str(setup["model"])]) == 2
    assert "not an Oracle" in capsys.readouterr().err
    assert main([*base, "--b", str(setup["root"] / "missing"), "--oracle", str(setup["oracle"])]) == 2
    assert "sample set not found" in capsys.readouterr().err
    assert main(["eval", "ood", "--result", str(setup["root"])]) == 2
    assert "not a win-rate result" in capsys.readouterr().err


def test_an_impossible_actor_pool_fails_before_scoring(setup, capsys, monkeypatch):
    """A GPU per scoring actor on the CPU-only test cluster: one line, exit 2, nothing written
    (Ray Data would otherwise wait for the actors forever)."""
    monkeypatch.setenv("DRDO_RAY_AUTOSCALING", "0")
    out = setup["root"] / "no-gpus"
    assert main(_winrate_argv(setup, out, "--num-gpus-per-actor", "1")) == 2
    assert re.search(
        r"needs \{CPU: 1, GPU: 1\}.*the cluster has \{CPU: \d+, GPU: 0\}", capsys.readouterr().err
    )
    assert not (out / "winrate.json").exists()
