"""A small synthetic language whose true reward r*(x, y) is a known program, for
`drdo-ray bench quality`. Pure functions (numpy only, no torch): the language, the true reward,
a noisy demonstration generator for SFT, and the Bradley-Terry labelling of response pairs with
controlled fractions of non-deterministic pairs and of flipped labels.

Language. A prompt is one of a few 5-word templates around a topic name ("tell me about
sports :"); every prompt has the same length, so batches of prompts need no padding. A response
is a bag of words from the topic lists, other topics' lists and filler words.

True reward (order-invariant, so a permutation of a response scores exactly the same):

    r*(x, y) = |distinct on-topic words| - OFF_TOPIC * |distinct off-topic words|
               - REPETITION * (n - |distinct words|) - LENGTH * max(0, n - TARGET_LENGTH)

with n the number of words. The best response is TARGET_LENGTH distinct on-topic words
(r* = 8); demonstrations are far from it (short, repetitive, partly off-topic)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOPICS: dict[str, tuple[str, ...]] = {
    "sports": (
        "sports",
        "ball",
        "team",
        "goal",
        "coach",
        "match",
        "score",
        "player",
        "league",
        "referee",
        "stadium",
        "season",
        "pitch",
        "trophy",
        "sprint",
        "tackle",
        "racket",
        "medal",
        "fans",
        "derby",
    ),
    "cooking": (
        "cooking",
        "recipe",
        "oven",
        "salt",
        "butter",
        "flour",
        "knife",
        "sauce",
        "garlic",
        "onion",
        "pepper",
        "simmer",
        "bake",
        "roast",
        "spoon",
        "dough",
        "spice",
        "kitchen",
        "broth",
        "grill",
    ),
    "music": (
        "music",
        "song",
        "guitar",
        "drum",
        "melody",
        "rhythm",
        "chord",
        "piano",
        "singer",
        "band",
        "album",
        "tempo",
        "violin",
        "lyrics",
        "concert",
        "bass",
        "choir",
        "harmony",
        "note",
        "tune",
    ),
    "space": (
        "space",
        "planet",
        "orbit",
        "rocket",
        "star",
        "galaxy",
        "comet",
        "moon",
        "nebula",
        "astronaut",
        "telescope",
        "gravity",
        "asteroid",
        "launch",
        "solar",
        "cosmos",
        "meteor",
        "crater",
        "probe",
        "lunar",
    ),
    "garden": (
        "garden",
        "seed",
        "soil",
        "flower",
        "rose",
        "weed",
        "shovel",
        "compost",
        "tulip",
        "hedge",
        "sprout",
        "root",
        "leaf",
        "bloom",
        "fern",
        "mulch",
        "rake",
        "orchard",
        "petal",
        "vine",
    ),
    "travel": (
        "travel",
        "ticket",
        "hotel",
        "train",
        "airport",
        "luggage",
        "map",
        "passport",
        "beach",
        "journey",
        "tourist",
        "cruise",
        "hostel",
        "route",
        "border",
        "visa",
        "guide",
        "island",
        "voyage",
        "museum",
    ),
    "ocean": (
        "ocean",
        "wave",
        "coral",
        "whale",
        "tide",
        "reef",
        "shark",
        "harbor",
        "anchor",
        "sailor",
        "dolphin",
        "current",
        "kelp",
        "shell",
        "lagoon",
        "squid",
        "diver",
        "gull",
        "surf",
        "trench",
    ),
    "computer": (
        "computer",
        "keyboard",
        "screen",
        "code",
        "chip",
        "memory",
        "server",
        "mouse",
        "pixel",
        "cache",
        "kernel",
        "laptop",
        "network",
        "compiler",
        "bug",
        "cursor",
        "disk",
        "router",
        "script",
        "byte",
    ),
}
FILLER: tuple[str, ...] = (
    "the",
    "a",
    "and",
    "of",
    "very",
    "good",
    "nice",
    "some",
    "many",
    "is",
    "it",
    "with",
    "really",
    "so",
    "great",
    "thing",
    "stuff",
    "more",
    "also",
    "just",
    "quite",
    "big",
    "small",
    "new",
    "old",
    "this",
    "that",
    "we",
    "they",
    "like",
)
# Every template is 5 words with "{t}" the topic name; ":" ends the prompt.
TEMPLATES: tuple[str, ...] = (
    "tell me about {t} :",
    "write words on {t} :",
    "some {t} words please :",
    "talk about {t} now :",
    "a note on {t} :",
    "describe {t} for me :",
    "list a few {t} :",
    "say something {t} related :",
)
PROMPT_LENGTH = 5

OFF_TOPIC = 0.5
REPETITION = 1.0
LENGTH = 1.5
TARGET_LENGTH = 8

WORD_TOPIC: dict[str, str] = {w: t for t, words in TOPICS.items() for w in words}


def vocabulary() -> list[str]:
    """Every word of the language, in a fixed order (topics, fillers, template words)."""
    words: list[str] = [w for ws in TOPICS.values() for w in ws] + list(FILLER)
    for template in TEMPLATES:
        words += [w for w in template.split() if w != "{t}"]
    return list(dict.fromkeys(words))  # de-duplicated, order kept


def prompt_topic(prompt: Sequence[str]) -> str:
    """The topic a prompt asks about: the first topic name in it."""
    for word in prompt:
        if word in TOPICS:
            return word
    raise ValueError(f"prompt names no topic: {' '.join(prompt)!r}")


@dataclass(frozen=True)
class RewardParts:
    relevance: float  # distinct on-topic words - OFF_TOPIC x distinct off-topic words
    repetition: float  # REPETITION x repeated words (n - distinct)
    length: float  # LENGTH x words past TARGET_LENGTH

    @property
    def total(self) -> float:
        return self.relevance - self.repetition - self.length


def reward_parts(prompt: Sequence[str], response: Sequence[str]) -> RewardParts:
    topic = prompt_topic(prompt)
    distinct = set(response)
    on = sum(1 for w in distinct if WORD_TOPIC.get(w) == topic)
    off = sum(1 for w in distinct if WORD_TOPIC.get(w) not in (None, topic))
    n = len(response)
    return RewardParts(
        relevance=on - OFF_TOPIC * off,
        repetition=REPETITION * (n - len(distinct)),
        length=LENGTH * max(0, n - TARGET_LENGTH),
    )


def true_reward(prompt: Sequence[str], response: Sequence[str]) -> float:
    """r*(x, y) for word lists (see the module docstring)."""
    return reward_parts(prompt, response).total


def make_prompts(n: int, rng: np.random.Generator) -> list[list[str]]:
    """``n`` prompts, topics and templates drawn uniformly."""
    names = list(TOPICS)
    out = []
    for _ in range(n):
        topic = names[int(rng.integers(len(names)))]
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        out.append(template.replace("{t}", topic).split())
    return out


def demonstration(prompt: Sequence[str], rng: np.random.Generator) -> list[str]:
    """A noisy SFT demonstration: 2..14 words, each on-topic with a per-response probability
    in [0.3, 0.9] (drawn with replacement, so words repeat), else filler or off-topic. The SFT
    model thus learns the language and a mediocre policy that alignment can improve on."""
    topic = prompt_topic(prompt)
    others = [w for t, ws in TOPICS.items() if t != topic for w in ws]
    on_topic_p = rng.uniform(0.3, 0.9)
    words = []
    for _ in range(int(rng.integers(2, 15))):
        u = rng.random()
        if u < on_topic_p:
            words.append(TOPICS[topic][int(rng.integers(len(TOPICS[topic])))])
        elif u < on_topic_p + (1 - on_topic_p) / 2:
            words.append(FILLER[int(rng.integers(len(FILLER)))])
        else:
            words.append(others[int(rng.integers(len(others)))])
    return words


# ------------------------------------------------------------------------ labelling


@dataclass(frozen=True)
class LabelledPair:
    prompt: int  # index into the prompt list
    chosen: int  # index into that prompt's candidates (or -1: the constructed permutation)
    rejected: int
    delta: float  # r*(chosen) - r*(rejected)
    p_first: float  # Bradley-Terry probability that the first response of the pair wins
    nondeterministic: bool  # |Δr*| <= tie_eps at selection
    flipped: bool


def bt_probability(delta: float, scale: float = 1.0) -> float:
    """p = σ(Δr* / scale): the Bradley-Terry probability that the first response is preferred."""
    return float(1.0 / (1.0 + np.exp(-delta / scale)))


def label_pairs(
    rewards: Sequence[Sequence[float]],
    *,
    nondeterministic: float,
    flip: float,
    rng: np.random.Generator,
    tie_eps: float = 0.25,
    bt_scale: float = 1.0,
    responses: Sequence[Sequence[Sequence[str]]] | None = None,
) -> list[LabelledPair]:
    """One labelled pair per prompt from its candidate responses' true rewards.

    Exactly ``round(nondeterministic * N)`` prompts (a seeded random subset) get their closest
    pair (smallest |Δr*|, ≤ ``tie_eps``; distinct responses preferred); where no such pair exists
    the second response is constructed as a permutation of the first (r* is order-invariant, so
    Δr* = 0; candidate index -1). The other prompts get a random pair with |Δr*| > ``tie_eps``
    (their most separated pair if there is none). Every label
    is drawn from Bernoulli(σ(Δr*/bt_scale)); then exactly ``round(flip * N)`` pairs (a seeded
    subset) have chosen and rejected swapped."""
    if not 0 <= nondeterministic <= 1 or not 0 <= flip <= 1:
        raise ValueError("nondeterministic and flip are fractions in [0, 1]")
    n = len(rewards)
    nondet = np.zeros(n, dtype=bool)
    nondet[rng.permutation(n)[: round(nondeterministic * n)]] = True
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.permutation(n)[: round(flip * n)]] = True
    out = []
    for i, r in enumerate(rewards):
        if len(r) < 2:
            raise ValueError("every prompt needs at least two candidate responses")
        pairs = list(itertools.combinations(range(len(r)), 2))

        def same(a: int, b: int, i: int = i) -> bool:
            return responses is not None and list(responses[i][a]) == list(responses[i][b])

        if nondet[i]:
            # Closest pair; among equally close ones, prefer two different responses.
            a, b = min(pairs, key=lambda ab: (abs(r[ab[0]] - r[ab[1]]), same(*ab)))
            if abs(r[a] - r[b]) > tie_eps:
                b = -1  # the permutation of candidate a
            delta = 0.0 if b == -1 else r[a] - r[b]
        else:
            # A random pair whose true rewards differ (the most separated one if none does).
            apart = [ab for ab in pairs if abs(r[ab[0]] - r[ab[1]]) > tie_eps]
            if apart:
                a, b = apart[int(rng.integers(len(apart)))]
            else:
                a, b = max(pairs, key=lambda ab: abs(r[ab[0]] - r[ab[1]]))
            delta = r[a] - r[b]
        p = bt_probability(delta, bt_scale)
        first_wins = rng.random() < p
        chosen, rejected = (a, b) if first_wins else (b, a)
        if flipped[i]:
            chosen, rejected = rejected, chosen
        d = delta if chosen == a else -delta
        out.append(LabelledPair(i, chosen, rejected, d, p, bool(nondet[i]), bool(flipped[i])))
    return out


def permuted(response: Sequence[str]) -> list[str]:
    """The constructed equal-reward partner of a response: rotated by one word (a different
    sequence whenever the response has two different words; same r* always)."""
    words = list(response)
    return words[1:] + words[:1] if len(words) > 1 else words
