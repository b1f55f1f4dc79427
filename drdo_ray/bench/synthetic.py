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
    "give me {t} ideas :",
    "explain {t} to me :",
    "my favourite is {t} :",
    "words around {t} please :",
    "i want {t} talk :",
    "share thoughts on {t} :",
    "what about {t} then :",
    "ramble on {t} today :",
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
    on_topic_p = rng.uniform(0.3, 0.9)
    return _draw_words(topic, int(rng.integers(2, 15)), on_topic_p, 0.0, rng)


def _draw_words(
    topic: str, n: int, on_topic_p: float, distinct_p: float, rng: np.random.Generator
) -> list[str]:
    """``n`` words: on-topic with probability ``on_topic_p`` (an unused one with probability
    ``distinct_p`` while any is left, else drawn with replacement), else filler or off-topic
    half and half. ``distinct_p == 0`` draws no extra random number."""
    others = [w for t, ws in TOPICS.items() if t != topic for w in ws]
    unused = list(TOPICS[topic])
    words = []
    for _ in range(n):
        u = rng.random()
        if u < on_topic_p:
            if unused and distinct_p > 0 and rng.random() < distinct_p:
                words.append(unused.pop(int(rng.integers(len(unused)))))
            else:
                words.append(TOPICS[topic][int(rng.integers(len(TOPICS[topic])))])
        elif u < on_topic_p + (1 - on_topic_p) / 2:
            words.append(FILLER[int(rng.integers(len(FILLER)))])
        else:
            words.append(others[int(rng.integers(len(others)))])
    return words


# ------------------------------------------------------------------------ prompts and responses


def all_prompts() -> list[list[str]]:
    """Every distinct prompt of the language: each template around each topic (16 x 8)."""
    return [template.replace("{t}", topic).split() for template in TEMPLATES for topic in TOPICS]


def split_prompts(seed: int, *, validation: float = 0.125, test: float = 0.25) -> dict[str, list[list[str]]]:
    """A seeded partition of :func:`all_prompts` into train / validation / test prompts.

    Stratified by topic, so every split asks about every topic and held-out prompts differ from
    the training ones by their template only (the reward reads the topic)."""
    rng = np.random.default_rng([seed, 4242])
    out: dict[str, list[list[str]]] = {"train": [], "validation": [], "test": []}
    for topic in TOPICS:
        prompts = [t.replace("{t}", topic).split() for t in TEMPLATES]
        order = rng.permutation(len(prompts))
        n_val, n_test = round(validation * len(prompts)), round(test * len(prompts))
        out["validation"] += [prompts[i] for i in order[:n_val]]
        out["test"] += [prompts[i] for i in order[n_val : n_val + n_test]]
        out["train"] += [prompts[i] for i in order[n_val + n_test :]]
    return out


def offpolicy_response(prompt: Sequence[str], rng: np.random.Generator) -> list[str]:
    """A response from a generator unlike the SFT policy (the default source of preference pairs,
    as the paper's pairs come from other models): 3..12 words, an on-topic probability drawn per
    response from [0.1, 1], on-topic words drawn without replacement 70% of the time. Its
    responses span the whole reward range, near-optimal ones included, which the SFT
    demonstrations (2..14 words, always with replacement) rarely reach."""
    topic = prompt_topic(prompt)
    on_topic_p = rng.uniform(0.1, 1.0)
    return _draw_words(topic, int(rng.integers(3, 13)), on_topic_p, 0.7, rng)


def permuted(response: Sequence[str]) -> list[str]:
    """The constructed equal-reward partner of a response: rotated by one word (a different
    sequence whenever the response has two different words; same r* always)."""
    words = list(response)
    return words[1:] + words[:1] if len(words) > 1 else words


# ------------------------------------------------------------------------ labelled pairs


@dataclass(frozen=True)
class Pair:
    prompt: tuple[str, ...]
    chosen: tuple[str, ...]
    rejected: tuple[str, ...]
    delta: float  # r*(chosen) - r*(rejected)
    kind: str  # "deterministic", "lowmargin" or "tie" (see PAIR_KINDS)
    flipped: bool  # a deterministic pair whose Bradley-Terry label was then swapped


# What a pair's |Δr*| is, by kind. r* moves in steps of 0.5, so the bands are disjoint: a tie is an
# exact tie, a low-margin pair differs by one or two steps, a deterministic one by three or more.
PAIR_KINDS = ("deterministic", "lowmargin", "tie")
REWARD_STEP = 0.5


def bt_probability(delta: float, scale: float = 1.0) -> float:
    """p = σ(Δr* / scale): the Bradley-Terry probability that the first response is preferred."""
    return float(1.0 / (1.0 + np.exp(-delta / scale)))


Pool = dict[tuple[str, ...], list[list[str]]]


def _separated_pair(
    pool: Pool, prompt: tuple[str, ...], lo: float, hi: float, rng: np.random.Generator, tries: int
) -> tuple[list[str], list[str], float] | None:
    """Two responses of ``prompt`` whose |Δr*| lies in [lo, hi], or None after ``tries`` draws."""
    responses = pool[prompt]
    for _ in range(tries):
        i, j = rng.choice(len(responses), size=2, replace=False)
        a, b = responses[i], responses[j]
        delta = true_reward(prompt, a) - true_reward(prompt, b)
        if lo <= abs(delta) <= hi:
            return a, b, delta
    return None


def labelled_pairs(
    pool: Pool,
    n: int,
    *,
    rng: np.random.Generator,
    margin: tuple[float, float],
    bt_scale: float,
    flip: float = 0.0,
    kind: str = "deterministic",
    tries: int = 50,
) -> list[Pair]:
    """``n`` pairs whose |Δr*| lies in ``margin`` = (lo, hi): a prompt drawn uniformly from the pool,
    two of its responses drawn until their margin is in the band, the label drawn from
    Bradley-Terry σ(Δr*/bt_scale); then exactly ``round(flip * n)`` labels (a seeded subset) are
    swapped. Deterministic pairs use a wide band and a flip share; low-margin ones
    (``kind="lowmargin"``) a narrow band of small margins and no flips."""
    lo, hi = margin
    if lo <= 0:
        raise ValueError(f"a labelled pair needs a positive margin (exact ties are tie_pairs), got {lo}")
    prompts = list(pool)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.permutation(n)[: round(flip * n)]] = True
    out: list[Pair] = []
    while len(out) < n:
        prompt = prompts[int(rng.integers(len(prompts)))]
        drawn = _separated_pair(pool, prompt, lo, hi, rng, tries)
        if drawn is None:
            continue  # this prompt's pool has no pair in the band in `tries` draws: another prompt
        a, b, delta = drawn
        if rng.random() >= bt_probability(delta, bt_scale):
            a, b, delta = b, a, -delta
        k = len(out)
        if flipped[k]:
            a, b, delta = b, a, -delta
        out.append(Pair(tuple(prompt), tuple(a), tuple(b), float(delta), kind, bool(flipped[k])))
    return out


def tie_pairs(pool: Pool, n: int, *, rng: np.random.Generator) -> list[Pair]:
    """``n`` exact ties: two different responses of one prompt with the same true reward (the
    rotated response when the pool has no such partner: r* is order-invariant), labelled by a fair
    coin (Bradley-Terry at Δr* = 0). Nothing separates them, for an Oracle or anyone."""
    prompts = list(pool)
    out: list[Pair] = []
    for _ in range(n):
        prompt = prompts[int(rng.integers(len(prompts)))]
        responses = pool[prompt]
        a = responses[int(rng.integers(len(responses)))]
        ra = true_reward(prompt, a)
        partners = [b for b in responses if b != a and true_reward(prompt, b) == ra]
        b = partners[int(rng.integers(len(partners)))] if partners else permuted(a)
        if rng.random() < 0.5:
            a, b = b, a
        out.append(Pair(tuple(prompt), tuple(a), tuple(b), 0.0, "tie", False))
    return out


def nondeterministic_count(total: int, share: float) -> int:
    """How many of ``total`` training pairs are non-deterministic at ``share``: they REPLACE
    deterministic ones, so every share trains on the same number of pairs (the same steps)."""
    if not 0 <= share < 1:
        raise ValueError(f"a non-deterministic share must lie in [0, 1), got {share}")
    return round(share * total)


def mixed_pairs(deterministic: Sequence[Pair], nondeterministic: Sequence[Pair], share: float) -> list[Pair]:
    """The training pairs at ``share``: the first ``nondeterministic_count(N, share)`` of the
    non-deterministic pairs and the first N minus that of the deterministic ones, N =
    len(deterministic). Prefixes, so a higher share keeps every non-deterministic pair of a lower
    one and drops deterministic ones from the end."""
    total = len(deterministic)
    k = nondeterministic_count(total, share)
    if k > len(nondeterministic):
        raise ValueError(
            f"share {share:g} needs {k} non-deterministic pairs, only {len(nondeterministic)} given"
        )
    return list(deterministic[: total - k]) + list(nondeterministic[:k])
