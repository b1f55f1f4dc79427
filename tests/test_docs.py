"""The README and docs/ say what the code does: every `drdo-ray ...` command in them (and every
`python jobs/X.py ...` job) parses with the real parser, the complete ones validate their
settings, every YAML block validates against its config class, the README's test command is the
one CI runs, and nothing points outside the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from drdo_ray import config as C
from drdo_ray.cli import build_parser
from drdo_ray.cli_flags import CLASS_KEY, config_from_args
from drdo_ray.pipeline_config import PipelineConfig
from drdo_ray.shipped_configs import resolve_config_file

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`(drdo-ray\s[^`]+)`")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<"}
# What each job script runs: `main([...prefix, *sys.argv[1:]])`.
JOBS = {
    f"jobs/{path.name}": shlex.split(
        re.search(r"main\(\[(.*?)\*", path.read_text()).group(1).replace(",", " ")
    )
    for path in sorted((ROOT / "jobs").glob("[!_]*.py"))
}
# The config class of each top-level key a YAML block may have.
YAML_SECTIONS = {
    "pipeline": PipelineConfig,
    "tiny_model": C.TinyModelConfig,
    "data": C.PrepareConfig,
    "sft": C.TrainConfig,
    "oracle": C.TrainConfig,
    "align": C.TrainConfig,
    "score": C.ScoreConfig,
    "generate": C.GenerateConfig,
    "serve": C.ServeConfig,
}


def _blocks(page: Path, languages: tuple[str, ...]) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang in languages]


def _argv(line: str) -> list[str] | None:
    """The words of a shell line up to its first operator, without leading VAR=value; None when
    it runs neither drdo-ray nor a job script (ray job submit ... -- python jobs/X.py counts)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words: list[str] = []
    for word in lexer:
        if word in SHELL_OPERATORS:
            break
        words.append(word)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words.pop(0)
    if words[:1] == ["drdo-ray"]:
        return words[1:]
    if "python" in words and words.index("python") + 1 < len(words):
        script = words[words.index("python") + 1]
        if script in JOBS:
            return [*JOBS[script], *words[words.index("python") + 2 :]]
    return None


def commands() -> list[tuple[str, str, bool]]:
    """(page, command, complete) of every drdo-ray command and job line: fenced lines are whole
    commands (complete), inline `drdo-ray ...` spans may name a command without its settings."""
    found = []
    for page in PAGES:
        for body in _blocks(page, ("bash", "console", "sh", "shell")):
            for line in body.replace("\\\n", " ").splitlines():
                if _argv(line) is not None:
                    found.append((page.name, line.strip(), True))
        for span in INLINE.findall(page.read_text()):
            found.append((page.name, " ".join(span.split()), False))
    return found


COMMANDS = commands()


def test_the_pages_hold_commands_and_yaml():
    assert len(COMMANDS) > 60 and {page for page, _, _ in COMMANDS} >= {"README.md", "quickstart.md"}
    assert sum(len(_blocks(page, ("yaml",))) for page in PAGES) >= 1


@pytest.mark.parametrize(
    ("page", "line", "complete"), COMMANDS, ids=[f"{p}: {c[:60]}" for p, c, _ in COMMANDS]
)
def test_every_documented_command_parses_and_validates(page, line, complete, capsys):
    argv = _argv(line)
    assert argv is not None
    if "--help" in argv or "-h" in argv:
        argv = argv[: min(i for i, w in enumerate(argv) if w in ("--help", "-h"))]
        if not argv:
            return  # `drdo-ray --help`
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{page}: `{line}` does not parse: {capsys.readouterr().err.strip()}")
    config = getattr(args, "config", None)
    if not complete or (config and resolve_config_file(config) is None):
        return  # a span naming a command, or a config file of the reader's own (my-experiment.yaml)
    cls = getattr(args, CLASS_KEY, None)
    if cls is not None:
        section = {"models": "tiny_model", "data": "data"}.get(args.command, getattr(args, "stage", None))
        extra = {"stage": args.stage} if cls is C.TrainConfig else None
        config_from_args(cls, args, section or args.command, extra)
    elif args.command == "pipeline" and config:
        C.load_config(PipelineConfig, config_file=config, section="pipeline", overrides=args.overrides)


YAML_BLOCKS = [(page.name, body) for page in PAGES for body in _blocks(page, ("yaml",))]


@pytest.mark.parametrize(
    ("page", "body"), YAML_BLOCKS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(YAML_BLOCKS)]
)
def test_every_yaml_block_validates_against_its_config_class(page, body):
    loaded = yaml.safe_load(body)
    assert isinstance(loaded, dict) and loaded, f"{page}: a YAML block that is not a mapping"
    for key, section in loaded.items():
        assert key in YAML_SECTIONS, f"{page}: YAML section {key!r} names no config class"
        extra = {"stage": key} if YAML_SECTIONS[key] is C.TrainConfig else {}
        YAML_SECTIONS[key].model_validate(section | extra)


def test_the_readme_test_command_is_what_ci_runs():
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert ci == ["make test"]
    readme_lines = {
        line.strip() for body in _blocks(ROOT / "README.md", ("bash",)) for line in body.splitlines()
    }
    assert "make test" in readme_lines


def test_the_readme_is_short_and_its_picture_is_in_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12_288
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert pictures and all((ROOT / p).is_file() for p in pictures)
    # Every relative link of the README resolves inside the repository.
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", readme):
        assert (ROOT / target).exists(), target


def test_nothing_points_outside_the_repository():
    """No page, source file or config refers to ../shared or to the team's design notes; tests may
    read real-data fixtures from ../shared/data/real (skipped where it is absent)."""
    offending = []
    for top in ("README.md", "docs", "drdo_ray", "jobs", "configs", "scripts", "tests", "mkdocs.yml"):
        paths = [ROOT / top] if (ROOT / top).is_file() else sorted((ROOT / top).rglob("*"))
        for path in paths:
            if not path.is_file() or path.suffix not in (".md", ".py", ".yaml", ".yml", ".txt", ""):
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                outside = "../shared" in line and not (top == "tests" and "../shared/data/real" in line)
                if path != Path(__file__) and (outside or re.search(r"\b(METHOD|ARCHITECTURE)\.md\b", line)):
                    offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)


def test_make_test_builds_the_docs_strictly():
    recipe = re.search(r"^test:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    (line,) = [line for line in recipe.splitlines() if "mkdocs" in line.lower()]
    # --quiet would hide the warnings that --strict turns into a failure.
    assert "build --strict" in line and "--quiet" not in line and "-q" not in line.split()
