"""`drdo-ray eval judge` against a real OpenAI-compatible HTTP server on 127.0.0.1 (the scripted
judge in judge_server.py), through the official openai client: win/tie/loss/dropped counts,
retries on 429/500/timeouts, the retry after an unparseable answer, cache hits on a rerun, the
cost cap, seeded random orders, and an API key that never reaches an output. Plus the parser,
the order combination and the price table as pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from judge_server import ScriptedJudge

from drdo_ray.cli import main
from drdo_ray.config import JudgeConfig
from drdo_ray.eval.judge import combine, order_plan, price_for, public_url, run_judge
from drdo_ray.eval.judge_prompts import build_prompt, parse_verdict

SECRET = "sk-test-DO-NOT-LEAK-0123456789"
POST = (
    "SUBREDDIT: r/test\n\nTITLE: a title\n\nPOST: "
    + "Something happened at work today and I need advice. " * 4
    + "\n\nTL;DR:"
)


def write_gen(
    folder: Path, texts: list[str], *, model: str, prompt: str = POST, temperature: float = 0.7
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "prompt_id": f"p{i:02d}",
            "prompt": prompt + f" (case {i})",
            "chat": False,
            "reference": f"human summary {i}",
            "model": model,
            "temperature": temperature,
            "sample_idx": 0,
            "text": text,
            "num_tokens": len(text.split()),
            "finish_reason": "stop",
        }
        for i, text in enumerate(texts)
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "generation.json").write_text(
        json.dumps(
            {
                "model": model,
                "temperatures": [temperature],
                "top_p": 0.8,
                "max_new_tokens": 64,
                "seed": 0,
                "prompts": "data/cnn",
            }
        )
    )
    return folder


# (text of A, text of B): what the scripted judge does with each pair, and the expected outcome.
SCENARIO = [
    ("GOOD a0", "plain b0"),  # win
    ("GOOD a1", "plain b1"),  # win
    ("plain a2", "GOOD b2"),  # loss
    ("plain a3", "plain b3"),  # position-biased judge: A, then A again -> tie
    ("GOOD a4 @429", "plain b4"),  # win after one 429 per order
    ("GOOD a5 @500", "plain b5"),  # win after one 500 per order
    ("GOOD a6 @SLOW", "plain b6"),  # win after one timeout per order
    ("GOOD a7 @GARBLE_ONCE", "plain b7"),  # win after one unparseable answer per order
    ("GOOD a8 @GARBLE_ALWAYS", "plain b8"),  # dropped: unparseable twice
    ("GOOD a9 @EMPTY", "plain b9"),  # dropped: empty twice
    ("plain a10 @BOLD", "GOOD b10"),  # loss, verdict in Markdown
    ("GOOD a11 @400", "plain b11"),  # dropped: request error (not retried)
    ("same text", "same text"),  # tie without asking
]
EXPECTED_OUTCOMES = [
    "win",
    "win",
    "loss",
    "tie",
    "win",
    "win",
    "win",
    "win",
    "dropped",
    "dropped",
    "loss",
    "dropped",
    "tie",
]
# HTTP requests per pair: 2 orders each, +1 per order for 429/500/timeout/garble-once; the first order
# of an always-unparseable pair costs 2 and its second order is never asked; 400 once; identical 0.
EXPECTED_REQUESTS = 2 + 2 + 2 + 2 + 4 + 4 + 4 + 4 + 2 + 2 + 2 + 1 + 0


@pytest.fixture(scope="module")
def gens(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("judge")
    return {
        "root": root,
        "a": write_gen(root / "gen_a", [a for a, _ in SCENARIO], model="runs/models/align-drdo"),
        "b": write_gen(root / "gen_b", [b for _, b in SCENARIO], model="runs/models/align-dpo"),
    }


def _judge_argv(server: ScriptedJudge, a: Path, b: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "judge",
        "--a",
        str(a),
        "--b",
        str(b),
        "--model",
        "gpt-4o",
        "--base-url",
        server.base_url,
        "--out",
        str(out),
        "--max-concurrency",
        "4",
        "--set",
        "backoff_base_s=0.01",
        "--set",
        "timeout_s=0.5",
        "--set",
        "bootstrap=200",
        *extra,
    ]


def test_scripted_judge_counts_retries_cache_and_secrecy(gens, tiny_model_dir, monkeypatch, capfd):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = gens["root"] / "out"
    with ScriptedJudge(slow_s=1.5) as server:
        argv = _judge_argv(server, gens["a"], gens["b"], out, "--tokenizer", str(tiny_model_dir))
        assert main(argv) == 0
        first = json.loads((out / "judge.json").read_text())
        assert server.requests == EXPECTED_REQUESTS
        assert {e["authorization"] for e in server.log} == {f"Bearer {SECRET}"}  # the real key went over HTTP
        assert {e["model"] for e in server.log} == {"gpt-4o"}

        # A rerun pays nothing: every answer comes from the cache; only the 400 (errors are never
        # cached) is asked again.
        assert main(argv) == 0
        second = json.loads((out / "judge.json").read_text())
        assert server.requests == EXPECTED_REQUESTS + 1

    assert (first["wins"], first["ties"], first["losses"], first["dropped"]) == (6, 2, 2, 3)
    assert first["win_rate"] == pytest.approx((6 + 0.5 * 2) / 10)
    assert first["dropped_by_reason"] == {"unparseable": 2, "error": 1}
    assert first["identical"] == 1 and first["not_judged"] == 0
    assert first["requests"] == EXPECTED_REQUESTS
    assert first["retries"] == 6  # one 429, one 500, one timeout, per order of their pairs
    assert first["errors"] == {"http_429": 2, "http_500": 2, "timeout": 2, "http_400": 1}
    assert first["parse_retries"] == 4  # garble-once x2 orders, garble-always, empty
    assert first["cache_hits"] == 0
    lo, hi = first["ci95"]
    assert lo <= first["win_rate"] <= hi
    answered = EXPECTED_REQUESTS - 7  # minus the 6 retried failures and the 400
    assert first["tokens"]["total"] > 0 and first["cost_usd"] > 0  # gpt-4o has a list price
    assert first["judge"]["base_url"] == server.base_url

    assert second["requests"] == 1 and second["cache_hits"] == answered
    assert second["cost_usd"] == 0 and second["cost_usd_cached"] == pytest.approx(first["cost_usd"])
    for key in ("wins", "ties", "losses", "dropped", "win_rate", "ci95"):
        assert second[key] == first[key]

    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [v["outcome"] for v in verdicts] == EXPECTED_OUTCOMES
    v3 = verdicts[3]  # position bias, made visible: each order's raw text says "A"
    assert [o["preferred"] for o in v3["orders"]] == ["A", "A"] and [o["winner"] for o in v3["orders"]] == [
        "a",
        "b",
    ]
    assert verdicts[7]["orders"][0]["raw"][0].startswith(
        "Both summaries"
    )  # the unparseable first answer is kept
    assert verdicts[0]["score_a"] == pytest.approx(0.8) and verdicts[0]["score_b"] == pytest.approx(0.3)
    assert len(verdicts[8]["orders"]) == 1 and verdicts[8]["reason"] == "unparseable"
    assert "http_400" in verdicts[11]["orders"][0]["error"] and "***" in verdicts[11]["orders"][0]["error"]
    assert all(v["prompt_tokens"] > 0 for v in verdicts)  # prompt lengths for the OOD bins
    ood = json.loads((out / "ood.json").read_text())
    assert ood["n"] == 10 and sum(b["n"] for b in ood["bins"]) == 10
    assert (out / "ood.png").stat().st_size > 0

    # The key never reaches a file (the SQLite cache included) or the terminal.
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err


def test_cost_cap_stops_before_spending_more_and_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    n = 6
    a = write_gen(tmp_path / "a", [f"GOOD answer {i}" for i in range(n)], model="m/a")
    b = write_gen(tmp_path / "b", [f"plain answer {i}" for i in range(n)], model="m/b")
    price = (0.1, 0.1)  # USD per 1k tokens: ~$0.03 a request, so a cap of $0.2 binds after a few
    cap = 0.2
    base = dict(
        a=str(a),
        b=str(b),
        out=str(tmp_path / "out"),
        model="judge-x",
        max_concurrency=1,
        price_per_1k=price,
        max_tokens=32,
        backoff_base_s=0.01,
        bootstrap=100,
    )
    with ScriptedJudge() as server:
        capped = run_judge(JudgeConfig(**base, base_url=server.base_url, max_cost=cap))
        assert server.requests == capped["requests"]
        verdicts = [json.loads(x) for x in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
        resumed = run_judge(JudgeConfig(**base, base_url=server.base_url))
        assert server.requests == capped["requests"] + resumed["requests"]

    assert capped["stopped_reason"] == "max_cost"
    assert 0 < capped["cost_usd"] <= cap
    assert capped["not_judged"] > 0 and capped["n"] + capped["not_judged"] == n
    # Both orders of every judged pair; a pair cut between its orders keeps its paid answer cached.
    assert 2 * capped["n"] <= capped["requests"] <= 2 * capped["n"] + 1
    per_request = capped["cost_usd"] / capped["requests"]
    # It stopped because the next request's worst case (estimated prompt + max_tokens) would not
    # fit, not earlier.
    assert cap - capped["cost_usd"] < 2 * per_request
    assert sum(v["reason"] == "max_cost" for v in verdicts) == capped["not_judged"]

    # Without a cap the rerun judges the rest and pays only for what it had not bought.
    assert resumed["n"] == n and resumed["wins"] == n and resumed["stopped_reason"] is None
    assert resumed["cache_hits"] == capped["requests"]
    assert resumed["requests"] == 2 * n - capped["requests"]


def test_random_order_is_seeded(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    n = 16
    a = write_gen(tmp_path / "a", [f"answer a{i}" for i in range(n)], model="m/a")
    b = write_gen(tmp_path / "b", [f"answer b{i}" for i in range(n)], model="m/b")
    results = []
    with ScriptedJudge() as server:
        for run, seed in ((0, 3), (1, 3), (2, 4)):
            cfg = JudgeConfig(
                a=str(a),
                b=str(b),
                out=str(tmp_path / f"out{run}"),
                base_url=server.base_url,
                model="local",
                orders="random",
                seed=seed,
                bootstrap=0,
            )
            results.append(run_judge(cfg))
            verdicts = [
                json.loads(x) for x in (tmp_path / f"out{run}" / "verdicts.jsonl").read_text().splitlines()
            ]
            results[-1]["shown"] = [v["orders"][0]["shown_first"] for v in verdicts]
    same, again, other = results
    assert same["requests"] == n and same["ci95"] is None
    # The position-biased judge picks whichever is shown first: the outcome is the order drawn.
    assert same["wins"] == same["shown"].count("a") and same["losses"] == same["shown"].count("b")
    assert 0 < same["wins"] < n
    assert again["shown"] == same["shown"] and again["win_rate"] == same["win_rate"]
    assert other["shown"] != same["shown"]
    assert same["price_per_1k"]["known"] is False and same["cost_usd"] == 0


def test_missing_key_and_bad_input_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    a = write_gen(tmp_path / "a", ["x"], model="m/a")
    assert main(["eval", "judge", "--a", str(a), "--b", str(a), "--out", str(tmp_path / "o")]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "judge",
                "--a",
                str(tmp_path / "nope"),
                "--b",
                "reference",
                "--out",
                str(tmp_path / "o"),
                "--base-url",
                "http://127.0.0.1:9/v1",
            ]
        )
        == 2
    )
    assert "sample set not found" in capsys.readouterr().err


# ------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("text", "preferred"),
    [
        ("Comparison: A is better.\nPreferred: A", "A"),
        ("Comparison: x\nPreferred: B\nScore for Summary A: 0.2\nScore for Summary B: 0.9", "B"),
        ("**Comparison:** x\n**Preferred:** **B**", "B"),
        ('Comparison: x\nPreferred: "A"', "A"),
        ("Comparison: x\nPreferred: Summary B.", "B"),
        ("Comparison: x\nPreferred: <A>", "A"),
        ("comparison: x\npreferred: b", "B"),
        ("Comparison: x\nPreferred: A (more concise)", "A"),
        ("Comparison: x\nPreferred: A\nOn reflection...\nPreferred: B", "B"),  # the final answer counts
        ("Comparison: both fine\nPreferred: Tie", "tie"),
        ("Comparison: x\nB", "B"),  # Fig. 9: "on a new line, state only A or B"
        ("Comparison: Summary A reads better.", None),
        ("Preferred: Apple", None),
        ("Preferred: C", None),
        ("Preferred: A or B", None),
        ("Preferred: A/B", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, preferred):
    assert parse_verdict(text).preferred == preferred


def test_parse_scores_only_in_unit_interval():
    v = parse_verdict("Preferred: A\nScore for Summary A: 0.75\nScore for Summary B: 7")
    assert v.scores == {"A": 0.75}
    assert parse_verdict("Preferred: B\nScore for Response A: 1\nScore for Response B: .5").scores == {
        "A": 1.0,
        "B": 0.5,
    }


def test_combine_orders_and_seeded_plan():
    assert combine(["a", "a"]) == "win" and combine(["b", "b"]) == "loss"
    assert combine(["a", "b"]) == "tie" and combine(["tie", "tie"]) == "tie"
    assert combine(["a", "tie"]) == "win" and combine(["tie", "b"]) == "loss"
    assert order_plan("both", 0, ("p", 0.7, 0)) == ["a", "b"]
    plans = [order_plan("random", 0, (f"p{i}", 0.7, 0))[0] for i in range(200)]
    assert plans == [order_plan("random", 0, (f"p{i}", 0.7, 0))[0] for i in range(200)]
    assert 60 < plans.count("a") < 140


def test_prices_and_public_url():
    assert price_for("gpt-4o") == ((0.0025, 0.01), True)
    assert price_for("gpt-4o-mini-2024-07-18")[0] == (0.00015, 0.0006)  # longest prefix wins
    assert price_for("gpt-4-turbo-2024-04-09")[0] == (0.01, 0.03)
    assert price_for("my-local-llama") == ((0.0, 0.0), False)
    assert price_for("my-local-llama", {"my-local": (0.001, 0.002)}) == ((0.001, 0.002), True)
    assert price_for("gpt-4o", explicit=(1.0, 2.0)) == ((1.0, 2.0), True)
    assert public_url("https://user:pw@host:8443/v1?key=abc") == "https://host:8443/v1"


def test_templates_follow_appendix_g():
    name, grounded = build_prompt(
        "summarize", prompt="POST: p\n\nTL;DR:", first="s1", second="s2", reference="gold"
    )
    assert name == "summarize_grounded"
    assert (
        "referring to the reference (human-written) summary" in grounded
        and "Reference Summary:\ngold" in grounded
    )
    assert "Summary A:\ns1\n\nSummary B:\ns2" in grounded and "TL;DR:" not in grounded
    assert "Score for Summary A: <score>" in grounded and grounded.rstrip().endswith(
        "Score for Summary B: <score>"
    )
    name, direct = build_prompt(
        "summarize",
        prompt="p",
        first="s1",
        second="gold",
        reference="gold",
        reference_is_candidate=True,
        scores=False,
    )
    assert name == "summarize_direct" and "Reference Summary" not in direct and "Score for" not in direct
    name, instruct = build_prompt("instruct", prompt="Write a haiku", first="r1", second="r2")
    assert name == "instruct" and "Response A:\nr1" in instruct and 'Preferred: <"A" or "B">' in instruct
