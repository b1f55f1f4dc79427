"""Judge prompt templates and the parser of the judge's answers.

Templates (paper Appendix G):
- ``summarize`` with a reference: Fig. 7, the comparison grounded by the human-written summary;
  with ``scores`` it adds Fig. 9's third step (a score in [0, 1] per summary).
- ``summarize`` without a reference, or when the reference *is* one of the two candidates
  (``--b reference``, "Gold vs. DRDO" in Table 1): Fig. 8, the direct comparison (the TL;DR
  prompt of Rafailov et al., 2023).
- ``instruct``: AlpacaEval-style instruction following (the paper judged AlpacaEval with GPT-4
  Turbo): which response better follows the user's instruction, same answer format.

Every template asks for ``Comparison: ...`` then ``Preferred: A|B`` (then the scores), so one
parser serves all. Pure Python: no Ray, no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUMMARY_GROUNDED = """Which of the following summaries does a better job of summarizing the most important points in the given forum post, without including unimportant or irrelevant details? Make your decision while referring to the reference (human-written) summary. A good summary is both precise and concise.

Post:
{prompt}

Reference Summary:
{reference}

Summary A:
{first}

Summary B:
{second}

FIRST, provide a one-sentence comparison of the two summaries, explaining which you prefer and why. SECOND, on a new line, state only "A" or "B" to indicate your choice.{scores_step} Your response should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">{scores_format}"""

SUMMARY_DIRECT = """Which of the following summaries does a better job of summarizing the most important points in the given forum post, without including unimportant or irrelevant details? A good summary is both precise and concise.

Post:
{prompt}

Summary A:
{first}

Summary B:
{second}

FIRST, provide a one-sentence comparison of the two summaries, explaining which you prefer and why. SECOND, on a new line, state only "A" or "B" to indicate your choice.{scores_step} Your response should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">{scores_format}"""

INSTRUCT = """For the following instruction to an AI assistant, which response follows the instruction better? A good response is helpful, accurate, and complete, without unnecessary or irrelevant content.

Instruction:
{prompt}

Response A:
{first}

Response B:
{second}

FIRST, provide a one-sentence comparison of the two responses, explaining which you prefer and why. SECOND, on a new line, state only "A" or "B" to indicate your choice.{scores_step} Your response should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">{scores_format}"""

_SCORES_STEP = (
    " THIRD, on a new line, provide your ratings (a real reward score between 0 to 1 where 1 is highest "
    "and 0 is lowest in quality) for the {things}."
)
_SCORES_FORMAT = "\nScore for {thing} A: <score>\nScore for {thing} B: <score>"

TEMPLATES = {"summarize_grounded": SUMMARY_GROUNDED, "summarize_direct": SUMMARY_DIRECT, "instruct": INSTRUCT}


def _post(prompt: str) -> str:
    """The article/post of a TL;DR-format prompt: the trailing ``TL;DR:`` cue is for the
    policy, not the judge."""
    text = prompt.rstrip()
    return text[: -len("TL;DR:")].rstrip() if text.endswith("TL;DR:") else text


def template_name(task: str, *, reference: str | None, reference_is_candidate: bool) -> str:
    if task == "instruct":
        return "instruct"
    if task != "summarize":
        raise ValueError(f"task must be summarize or instruct, got {task!r}")
    return "summarize_grounded" if reference and not reference_is_candidate else "summarize_direct"


def build_prompt(
    task: str,
    *,
    prompt: str,
    first: str,
    second: str,
    reference: str | None = None,
    reference_is_candidate: bool = False,
    scores: bool = True,
) -> tuple[str, str]:
    """(template name, the judge's user message) with ``first`` shown as A, ``second`` as B."""
    name = template_name(task, reference=reference, reference_is_candidate=reference_is_candidate)
    thing = "Response" if name == "instruct" else "Summary"
    text = TEMPLATES[name].format(
        prompt=_post(prompt) if name != "instruct" else prompt.strip(),
        reference=(reference or "").strip(),
        first=first.strip(),
        second=second.strip(),
        scores_step=_SCORES_STEP.format(things=thing.lower() + "s") if scores else "",
        scores_format=_SCORES_FORMAT.format(thing=thing) if scores else "",
    )
    return name, text


# ------------------------------------------------------------------------------ parsing

# "Preferred: A", "**Preferred:** **B**", "Preferred: Summary A.", "preferred - \"B\"", "More helpful: A";
# the letter must end its word ("Preferred: A (more concise)" counts, "Preferred: Apple" does not)
# and must not be one of two ("Preferred: A or B" is no choice).
_PREFERRED = re.compile(
    r"^[\s>*_#`-]*(?:preferred|preference|more\s+helpful|better|choice|winner)(?:\s+(?:summary|response))?"
    r"[\s*_`]*[:：\-][\s*_`\"'“”‘’<\[(]*(?:(?:summary|response|option)\s+)?"
    r"(?P<verdict>A|B|tie|equal|both|neither)(?![A-Za-z0-9])"
    # "A or B", "A/B", "A and B": no choice made.
    r"(?![\s*_`\"']*(?:or|and|/|,|&)\s*(?:summary\s+|response\s+)?[\"'*_`]*[AB](?![A-Za-z0-9]))",
    re.IGNORECASE | re.MULTILINE,
)
# A line holding only the letter (Fig. 9's "SECOND, on a new line, state only A or B").
_BARE = re.compile(r"^[\s*_`\"'“”<\[(]*(?P<verdict>A|B)[\s*_`\"'“”>\]).]*$", re.MULTILINE)
_SCORE = re.compile(
    r"score\s+(?:for\s+)?(?:summary|response)?\s*(?P<side>A|B)[\s*_`]*[:=][\s*_`]*(?P<value>[0-9]*\.?[0-9]+)",
    re.IGNORECASE,
)
TIE_WORDS = {"tie", "equal", "both", "neither"}


@dataclass
class Verdict:
    """A parsed answer: ``preferred`` is "A", "B", "tie", or None when unparseable; scores
    keyed by the *shown* position ("A"/"B"), each in [0, 1] or absent."""

    preferred: str | None
    scores: dict[str, float]

    @property
    def parsed(self) -> bool:
        return self.preferred is not None


def parse_verdict(text: str | None) -> Verdict:
    """The judge's choice: the last ``Preferred:``-style line wins (a judge that reconsiders
    ends with its final answer); else a last line holding only "A" or "B". An explicit
    tie/both/neither is a tie verdict. Scores outside [0, 1] are ignored."""
    if not text or not text.strip():
        return Verdict(None, {})
    matches = list(_PREFERRED.finditer(text))
    preferred: str | None = None
    if matches:
        value = matches[-1].group("verdict")
        preferred = "tie" if value.lower() in TIE_WORDS else value.upper()
    else:
        bare = list(_BARE.finditer(text))
        if bare:
            preferred = bare[-1].group("verdict").upper()
    scores: dict[str, float] = {}
    for match in _SCORE.finditer(text):
        value = float(match.group("value"))
        if 0.0 <= value <= 1.0:
            scores[match.group("side").upper()] = value
    return Verdict(preferred, scores)
