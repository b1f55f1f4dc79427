#!/usr/bin/env python3
"""Write the small synthetic sample datasets shipped in ``drdo_ray/data/samples``.

The hub is not reachable from every machine this project runs on, so the package ships tiny
synthetic stand-ins for its datasets, each in the EXACT upstream schema (column names, key
order, nesting, types):

* ``ultrafeedback_binarized.jsonl``  HuggingFaceH4/ultrafeedback_binarized, split train_prefs
* ``ultrafeedback_cleaned.jsonl``    argilla/ultrafeedback-binarized-preferences-cleaned
* ``tldr_comparisons.jsonl``         openai/summarize_from_feedback, config comparisons
* ``tldr_sft.jsonl``                 vwxyzjn/summarize_from_feedback_tldr_3_filtered
* ``cnn_dailymail.jsonl``            abisee/cnn_dailymail 3.0.0
* ``alpaca_eval.json``               tatsu-lab/alpaca_eval (a JSON array, like the real file)

Usage::

    python scripts/make_samples.py --out drdo_ray/data/samples [--seed 0]

The output is byte-identical across runs and machines: only the stdlib ``random.Random`` is used
(one stream per file, seeded with the string ``"{seed}:{file}"``), no set is ever iterated, JSON is
written with a fixed key order, ``ensure_ascii=False`` and ``\\n`` line endings.

Content is templated, language-like English over a vocabulary of a few hundred words in ten
topics (cooking, travel, programming, gardening, finance, pets, fitness, music, relationships,
work). Each topic has its own nouns ("topic words"); no noun belongs to two topics.

Hidden rule (what a reward model can learn from the preference files)
---------------------------------------------------------------------
Every prompt / post / article is written around a few *focus words* taken from one topic. The
preferred ("chosen") response or summary is systematically better:

1. on topic: it mentions the focus words of its prompt/post/article;
2. concise: it is short (a few sentences; a TL;DR of 10-30 words);
3. not repetitive: no repeated sentence or phrase.

The dispreferred ("rejected") one breaks at least one of these: it is off topic (filled with the
nouns of a different topic, or with generic words such as "thing"/"stuff"), repetitive (a sentence
or phrase said two or three times), or rambling (long, generic filler sentences).

Label noise: about 10% of the non-tied pairs are flipped (the worse text is labelled chosen).
* Ultrafeedback (binarized): ~17% of the pairs have ``score_chosen == score_rejected``, as
  upstream; in those pairs both responses are of similar quality and the order is random. Flipped
  pairs get a small score gap.
* Argilla cleaned: no ties (removed upstream); ratings are means of 4 aspects (steps of 0.25).
* TL;DR comparisons: each pair has a hidden "gap" g in [0, 1). For g < 0.75 the worse summary is
  the better one with ``1 + int(8 g)`` small degrading edits (a focus word replaced by a generic or
  off-topic word, a filler word inserted, a short span repeated), so low-g pairs differ by a word
  or two; for g >= 0.75 it is an independently written bad summary (off topic, repetitive or
  rambling). The labeller confidence is ``round(1 + 8 g + N(0, 0.9))`` clipped to 1..9 (mean ~5),
  and the flip probability ``0.02 + 0.25 (1 - g)^2`` (~10% overall), so high confidence goes with
  large edit distance and clean labels, low confidence with near-identical summaries and noisy
  labels. ~10% of the rows have a null confidence. A CNN/DM batch (``batch0_cnndm``, ``cnndm0``,
  ``cnndm2``: ``info.article`` and ``info.site`` set, ``post``/``subreddit`` null) is included;
  downstream it is excluded from training.

``tldr_sft.jsonl``, ``cnn_dailymail.jsonl`` and ``alpaca_eval.json`` hold only good texts
(reference summaries, highlights, reference outputs) in the same style as the chosen ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------

# fmt: off
TOPICS: dict[str, dict[str, list[str]]] = {
    "cooking": {
        "nouns": ["recipe", "oven", "garlic", "onions", "sauce", "pasta", "skillet", "dough", "bread",
                  "butter", "soup", "spices", "chicken", "rice", "broth", "flour", "knife", "marinade",
                  "crust", "stew", "jalapeño"],
        "verbs": ["bake", "simmer", "season", "chop", "roast", "stir", "marinate", "reheat"],
        "adjs": ["crispy", "soggy", "bland", "salty", "tender", "burnt", "fresh", "greasy"],
        "subreddits": ["Cooking", "AskCulinary", "Baking"],
    },
    "travel": {
        "nouns": ["passport", "flight", "hostel", "itinerary", "luggage", "train", "visa", "airport",
                  "hotel", "backpack", "museum", "café", "beach", "ferry", "budget", "layover", "map",
                  "currency", "tickets", "guidebook"],
        "verbs": ["book", "pack", "cancel", "plan", "reschedule", "explore", "visit", "change"],
        "adjs": ["expensive", "crowded", "cheap", "delayed", "quiet", "scenic", "exhausting", "affordable"],
        "subreddits": ["travel", "solotravel", "backpacking"],
    },
    "programming": {
        "nouns": ["function", "database", "compiler", "bug", "server", "script", "library", "variable",
                  "loop", "repository", "terminal", "laptop", "framework", "query", "deadline", "tests",
                  "API", "code", "commit", "app"],
        "verbs": ["debug", "refactor", "deploy", "install", "rewrite", "test", "optimize", "document"],
        "adjs": ["slow", "broken", "buggy", "messy", "fast", "clean", "outdated", "confusing"],
        "subreddits": ["learnprogramming", "cscareerquestions", "programming"],
    },
    "gardening": {
        "nouns": ["soil", "compost", "seeds", "seedlings", "roses", "fertilizer", "garden", "mulch",
                  "weeds", "hose", "shovel", "greenhouse", "basil", "succulents", "roots", "pots",
                  "leaves", "lawn", "aphids", "hedge"],
        "verbs": ["water", "prune", "repot", "plant", "fertilize", "harvest", "transplant", "weed"],
        "adjs": ["wilted", "yellow", "healthy", "leggy", "overwatered", "thriving", "dry", "shady"],
        "subreddits": ["gardening", "houseplants", "vegetablegardening"],
    },
    "finance": {
        "nouns": ["savings", "mortgage", "loan", "credit", "debt", "paycheck", "taxes", "rent",
                  "account", "interest", "retirement", "stocks", "insurance", "bills", "payment", "bank",
                  "refund", "fund", "pension", "landlord"],
        "verbs": ["pay off", "refinance", "save", "invest", "cancel", "consolidate", "track", "split"],
        "adjs": ["high", "overdue", "tight", "manageable", "risky", "stable", "huge", "unexpected"],
        "subreddits": ["personalfinance", "povertyfinance", "financialindependence"],
    },
    "pets": {
        "nouns": ["puppy", "kitten", "dog", "cat", "leash", "crate", "vet", "treats", "litter", "collar",
                  "kennel", "harness", "toys", "bowl", "walks", "fleas", "trainer", "shelter", "groomer",
                  "yard"],
        "verbs": ["train", "walk", "feed", "adopt", "groom", "socialize", "reward", "brush"],
        "adjs": ["anxious", "playful", "aggressive", "shy", "hyper", "calm", "stubborn", "friendly"],
        "subreddits": ["dogs", "cats", "Dogtraining", "Pets"],
    },
    "fitness": {
        "nouns": ["squat", "deadlift", "gym", "cardio", "protein", "workout", "treadmill", "calories",
                  "bench", "routine", "stretching", "marathon", "shoes", "reps", "weights", "diet",
                  "sleep", "coach", "knees", "muscles"],
        "verbs": ["lift", "stretch", "track", "increase", "skip", "start", "change", "plan"],
        "adjs": ["sore", "tired", "consistent", "stronger", "heavy", "intense", "injured", "motivated"],
        "subreddits": ["Fitness", "loseit", "running", "bodyweightfitness"],
    },
    "music": {
        "nouns": ["guitar", "piano", "chords", "band", "drummer", "song", "lyrics", "album", "concert",
                  "amp", "metronome", "scales", "practice", "gig", "vocals", "studio", "microphone",
                  "teacher", "melody", "recording"],
        "verbs": ["practice", "record", "learn", "tune", "rehearse", "write", "mix", "perform"],
        "adjs": ["catchy", "flat", "loud", "sloppy", "tight", "upbeat", "nervous", "quiet"],
        "subreddits": ["WeAreTheMusicMakers", "Guitar", "piano", "Music"],
    },
    "relationships": {
        "nouns": ["boyfriend", "girlfriend", "anniversary", "texts", "argument", "trust", "date",
                  "parents", "birthday", "wedding", "jealousy", "apology", "friendship", "roommate",
                  "phone", "weekend", "gift", "breakup", "promise", "feelings"],
        "verbs": ["discuss", "plan", "forget", "mention", "cancel", "talk about", "bring up", "ignore"],
        "adjs": ["distant", "jealous", "upset", "honest", "awkward", "supportive", "hurtful", "serious"],
        "subreddits": ["relationships", "relationship_advice", "dating_advice", "BreakUps"],
    },
    "work": {
        "nouns": ["manager", "résumé", "interview", "coworker", "promotion", "raise", "office", "shift",
                  "boss", "contract", "internship", "meeting", "email", "schedule", "overtime", "team",
                  "project", "review", "recruiter", "offer"],
        "verbs": ["negotiate", "ask for", "apply for", "prepare for", "accept", "decline", "reschedule",
                  "mention"],
        "adjs": ["stressful", "toxic", "flexible", "overwhelming", "unfair", "promising", "demanding",
                 "boring"],
        "subreddits": ["jobs", "careerguidance", "antiwork"],
    },
}
TOPIC_NAMES = list(TOPICS)
GENERAL_SUBREDDITS = ["AskReddit", "tifu", "Advice", "self", "offmychest"]
GENERIC_NOUNS = ["thing", "stuff", "situation", "issue", "whole thing", "part", "something"]
FILLER_WORDS = ["basically", "like", "honestly", "kinda", "literally", "you know,", "sort of", "idk"]
PEOPLE = ["my boyfriend", "my girlfriend", "my roommate", "my sister", "my brother", "my mom", "my dad",
          "my best friend", "my coworker", "my neighbor", "my wife", "my husband", "my cousin"]
WHEN = ["last night", "yesterday", "this morning", "a few weeks ago", "over the weekend", "last month"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
UNITS = ["weeks", "months", "days", "years"]
FEELINGS = ["frustrated", "confused", "stressed", "embarrassed", "hopeful", "exhausted", "anxious"]

# Generic, content-free sentences: the material of rambling answers.
FILLER_SENTENCES = [
    "There are a lot of different things to think about here, and everyone has their own opinion.",
    "It really depends on many factors, so it is hard to give one answer that works for everyone.",
    "In general, life is complicated and things do not always go the way we plan them.",
    "Some people say one thing and other people say something completely different.",
    "At the end of the day, you have to decide what feels right for you.",
    "I have read about this somewhere before, but I do not remember all the details.",
    "It is important to remember that every situation is unique in its own way.",
    "Of course, there are exceptions to every rule, and this is no different.",
    "Many experts have written long articles about questions like this one.",
    "To be honest, it is one of those topics that people could discuss for hours.",
    "It would be naïve to think that there is a single perfect answer.",
    "Everyone learns at their own pace, and that is completely fine.",
    "There is no need to rush into anything before you have thought it through.",
    "Personally, I think it is always good to keep an open mind about these things.",
]

ADVICE = [
    "Start by taking care of the {n1} before you worry about the {n2}.",
    "The {adj} {n1} is usually the problem, so {v} it carefully and check the {n2} afterwards.",
    "Try to {v} the {n1} a little every day and keep short notes about the {n2}.",
    "If the {n1} feels {adj}, {v} the {n2} first and then look at it again.",
    "Most beginners forget that the {n1} and the {n2} affect each other.",
    "Keep the {n1} simple: one good {n2} is better than three average ones.",
    "The key is to {v} the {n1} slowly and pay attention to the {n2}.",
    "You can also {v} the {n2} ahead of time, which saves effort with the {n1} later.",
    "Avoid changing the {n1} and the {n2} at the same time, or you will not know what helped.",
    "A {adj} {n2} is normal at first; it gets better once the {n1} is in good shape.",
    "Check the {n3} as well, because it often explains why the {n1} seems {adj}.",
    "Write down what you did with the {n1}, so you can repeat what works.",
]
OPENERS = ["", "", "", "Great question!", "Sure!", "Here is a simple approach.", "Happy to help."]
CLOSERS = ["", "", "", "Good luck!", "I hope this helps.", "Enjoy the process."]

UF_PROMPTS = [
    "How can I {v} the {n1} without ruining the {n2}?",
    "What are some tips for a beginner who wants to {v} the {n1}? I also have questions about the {n2}.",
    "Explain the difference between the {n1} and the {n2} in simple terms.",
    "Write a short guide about the {n1} and the {n2} for someone new to {topic}.",
    "My {n1} keeps getting {adj}. What should I do with the {n2}?",
    "Give me three practical ideas for the {n1} that also involve the {n2}.",
    "Is it a good idea to {v} the {n1} every week, or is that too much for the {n2}?",
    "I am planning to {v} the {n1} this weekend. What should I know about the {n2} first?",
    "Why does the {n1} become {adj} when I {v} the {n2}?",
    "Can you summarize the most common mistakes people make with the {n1} and the {n2}?",
    "Answer briefly: what matters more for {topic}, the {n1} or the {n2}?",
    "Create a checklist for dealing with the {n1} and the {n2}.",
]

POST_STORY = [
    "I have been trying to {v} the {n1} for about {num} {unit} now, but the {n2} keeps getting {adj}.",
    "Last {day}, {person} told me that my {n1} was {adj}, and honestly it hurt a bit.",
    "For context, I am pretty new to this and I only started to {v} the {n1} recently.",
    "Every time I {v} the {n2}, something goes wrong with the {n1}.",
    "I read a few guides online about the {n1}, but none of them say anything about the {n2}.",
    "{Person} thinks I should just {v} the {n2} and stop worrying about the {n1}.",
    "The {n3} is also a problem, because it was {adj} from the start.",
    "I spent way too much money on the {n1} and I do not want to waste it.",
    "It is starting to affect my sleep and my mood, which is not great.",
    "We talked about the {n2} for hours, but nothing really changed.",
    "I know this sounds small, but the {n1} means a lot to me.",
    "A friend suggested that I {v} the {n3} first, but I am not sure that helps.",
    "Now the {n1} is {adj} again and I am running out of ideas.",
    "I tried to {v} the {n2} twice this week and both times it ended badly.",
    "Part of me wants to give up on the {n1} completely — but I have put so much work into it.",
    "I feel {feeling} about the whole thing, and {person} does not really get it.",
    "To make things worse, the {n3} and the {n2} both need attention at the same time.",
    "I asked {person} for help with the {n1}, and they just laughed at me.",
]
POST_SHORT = [
    "It is really getting to me.",
    "I am not sure what to do.",
    "Any help is welcome.",
    "Thanks in advance.",
    "This is driving me crazy.",
    "I just want the {n1} to work.",
    "Nobody I know has an answer.",
    "Edit: typo.",
]
POST_OPEN = [
    "Throwaway account because {person} knows my main.",
    "Long time lurker, first time posting here.",
    "Sorry for the formatting, I am on mobile.",
    "So this happened {when} and I still do not know how to feel.",
    "Okay, this might be a dumb question.",
    "I ({age}{sex}) need some outside perspective.",
]
POST_CLOSE = [
    "Has anyone dealt with the {n1} being this {adj} before?",
    "What would you do about the {n1} in my position?",
    "Any advice about the {n2} would be really appreciated.",
    "Am I overreacting, or is the {n1} really the problem?",
    "How do I {v} the {n1} without making the {n2} worse?",
]
TITLES = [
    "My {n1} keeps getting {adj}, what do I do?",
    "Need advice about my {n1} and the {n2}",
    "[Help] {Adj} {n1} situation",
    "Is it normal for the {n1} to be this {adj}?",
    "{Person} is upset about my {n1}",
    "How do I {v} the {n1} when the {n2} is {adj}?",
    "Update: still struggling with the {n1}",
]
GOOD_SUMMARY = [
    "my {n1} keeps getting {adj} whenever I {v} the {n2}. How do I fix it?",
    "tried to {v} the {n1}, but the {n2} is still {adj}. Need advice.",
    "my {n1} is {adj} and the {n2} makes it worse. What should I do?",
    "spent {num} {unit} on the {n1} and the {n2}, still {adj}. Should I give up?",
    "{person} says to {v} the {n2}, I think the {n1} is the real problem. Who is right?",
    "{adj} {n1}, problems with the {n2} and the {n3}. How do I {v} the {n1} properly?",
    "the {n1} and the {n2} went wrong at the same time, {feeling} and need help.",
]
RAMBLING_SUMMARY = [
    "so basically long story short there is this thing going on and I do not really know what to do, "
    "{person} said some stuff about it, anyway it is a whole situation.",
    "idk, it is just one of those things where everything happens at once, and {person} is not helping, "
    "and honestly I am just tired of it.",
    "there is a problem with some stuff and I tried a few things but nothing worked, so now it is all "
    "kind of a mess.",
]

# News articles.
FIRST_NAMES = ["James", "Sarah", "Michael", "Emma", "David", "Olivia", "Daniel", "Sophie", "Robert",
               "Laura", "José", "Zoë", "Thomas", "Hannah", "Peter", "Amira", "Lucas", "Grace"]
LAST_NAMES = ["Smith", "Johnson", "Clarke", "Martínez", "Brown", "Taylor", "Wilson", "Evans", "Walker",
              "Hughes", "Patel", "Nguyen", "Roberts", "Murphy", "Green", "Baker"]
CITIES = ["London", "Atlanta", "New York", "Sydney", "Manchester", "Chicago", "Paris", "Dublin",
          "Toronto", "Los Angeles", "Glasgow", "Denver", "Bristol", "Houston"]
ORGS = ["city council", "consumer watchdog", "Department of Transportation", "University of Leeds",
        "Office for National Statistics", "local chamber of commerce", "state health department",
        "National Trust", "Better Business Bureau"]
NEWS = [
    "{city} officials said on {day} that the {n1} program would be expanded next year.",
    "{name}, {age}, told reporters that the {n1} had become {adj} over the past {num} months.",
    "According to a report published by the {org}, demand for the {n2} rose by {pct} percent.",
    "'We have never seen anything like this,' said {name}, a spokesperson for the {org}.",
    "Experts warned that the {n2} could become {adj} if nothing changes.",
    "The {org} has faced criticism for the way it handled the {n1}.",
    "Local residents said the {n3} was the main reason for their concern.",
    "The announcement comes after weeks of debate about the {n1} and the {n2}.",
    "{name} added that families in {city} should {v} the {n2} before the end of the year.",
    "Critics argue that the plan does little to address the {adj} {n3}.",
    "A similar scheme was tried in {city2} in {year}, with mixed results.",
    "Figures released on {day} show that more than {big} people have been affected by the {n1}.",
    "The {org} said it would publish new guidance on the {n2} in the spring.",
    "Some shops in {city} have already stopped selling the {n3}, the report said.",
    "'People deserve clear answers about the {n1},' {name} said in a statement.",
    "The row over the {n1} began in {year}, when the first complaints reached the {org}.",
    "Several charities in {city} have called for an independent review of the {n2}.",
    "{name} said the {n3} had been {adj} for as long as anyone could remember.",
    "Shoppers interviewed on {day} were divided, with some saying the {n1} was not a priority.",
    "The {org} declined to comment on the {n2} when contacted by this newspaper.",
    "Officials hope the changes will make the {n1} cheaper and easier to find.",
    "Campaigners plan to hand a petition about the {n3} to ministers next month.",
    "It is not the first time the {n1} has made headlines in {city}.",
    "In {city2}, a pilot project cut complaints about the {n2} by almost half.",
    "'Nobody wants to {v} the {n1} twice,' one resident said.",
    "The full report is expected to be published later this year.",
    "A survey of {big} households found that most people had never heard of the {n3}.",
    "Opposition politicians described the plan as {adj} and poorly explained.",
    "The {org} said that the {n2} would remain available while the review takes place.",
]
HEADLINES = [
    "{Adj} {n1} worries residents in {city}",
    "{City} to expand {n1} program after {org} report",
    "Why the {n1} and the {n2} are suddenly in the news",
    "{name} warns of {adj} {n2} as figures rise",
]
HIGHLIGHTS = [
    "{name} says the {n1} has become {adj} .",
    "Report by the {org} finds demand for the {n2} rose by {pct} percent .",
    "Officials in {city} will expand the {n1} program next year .",
    "More than {big} people affected by the {n1} , figures show .",
    "Critics say the plan ignores the {adj} {n3} .",
]

# TL;DR comparison metadata (names as upstream).
REDDIT_BATCHES = ["batch3", "batch4", "batch5", "batch6", "batch7", "batch8", "batch9", "batch10",
                  "batch11", "batch12", "batch13", "batch14", "batch15", "batch16", "batch17", "batch18",
                  "batch19", "batch20", "batch22"]
GOOD_POLICIES = ["ref", "sup4_ppo_rm3_kl10", "sup4_ppo_rm4_6b_kl14",
                 "sup4_t0.7", "sup2"]
BAD_POLICIES = ["sup1", "pretrain_6b_t0.7", "pretrain_12b_t0.7", "sup4_6b_t0.7", "sup3_t0.7", "sup2",
                "sup4_t0.7"]
NOTES = ["mentions the main problem", "summary b misses the point of the post", "both are okay",
         "the other one repeats itself", "too long"]

UF_SOURCES = ["evol_instruct", "false_qa", "flan_v2_cot", "flan_v2_niv2", "flan_v2_p3", "flan_v2_flan2021",
              "sharegpt", "ultrachat"]
STRONG_MODELS = ["gpt-4", "gpt-3.5-turbo", "llama-2-70b-chat", "wizardlm-70b", "vicuna-33b", "bard",
                 "ultralm-65b", "mpt-30b-chat"]
WEAK_MODELS = ["alpaca-7b", "falcon-40b-instruct", "pythia-12b", "starchat", "llama-2-7b-chat",
               "wizardlm-7b", "ultralm-13b", "llama-2-13b-chat", "wizardlm-13b"]

ALPACA_DATASETS = ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]  # order of the real file
ALPACA_WEIGHTS = [16, 19, 23, 31, 11]
# fmt: on


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def fill(template: str, slots: dict[str, str]) -> str:
    """Format ``template``; ``{Key}`` is the capitalised value of ``{key}``."""
    full = dict(slots)
    for key, value in slots.items():
        full[cap(key)] = cap(value)
    return template.format(**full)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def base36(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(n))


def other_topic(rng: random.Random, topic: str) -> str:
    return rng.choice([t for t in TOPIC_NAMES if t != topic])


def topic_slots(rng: random.Random, topic: str, focus: list[str] | None = None) -> dict[str, str]:
    """Slots for one text about ``topic``; ``focus`` (3 nouns) are reused when given."""
    voc = TOPICS[topic]
    nouns = focus if focus is not None else rng.sample(voc["nouns"], 3)
    adj, adj2 = rng.sample(voc["adjs"], 2)
    return {
        "n1": nouns[0],
        "n2": nouns[1],
        "n3": nouns[2],
        "v": rng.choice(voc["verbs"]),
        "adj": adj,
        "adj2": adj2,
        "topic": topic,
        "person": rng.choice(PEOPLE),
        "num": str(rng.randint(2, 11)),
        "unit": rng.choice(UNITS),
        "day": rng.choice(DAYS),
        "when": rng.choice(WHEN),
        "feeling": rng.choice(FEELINGS),
        "age": str(rng.randint(19, 41)),
        "sex": rng.choice(["F", "M"]),
    }


def reslot(rng: random.Random, slots: dict[str, str], **changes: str) -> dict[str, str]:
    """Same nouns and names, fresh verb/adjectives/person/number (varied sentences on one subject)."""
    fresh = topic_slots(rng, slots["topic"], [slots["n1"], slots["n2"], slots["n3"]])
    new = dict(slots)
    for key in ("v", "adj", "adj2", "person", "num", "unit", "day", "when", "feeling"):
        new[key] = fresh[key]
    new.update(changes)
    return new


def rotate(slots: dict[str, str], rng: random.Random) -> dict[str, str]:
    """Same slots with the three focus nouns in a random order."""
    nouns = [slots["n1"], slots["n2"], slots["n3"]]
    rng.shuffle(nouns)
    return {**slots, "n1": nouns[0], "n2": nouns[1], "n3": nouns[2]}


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(dumps(row) + "\n")


# --------------------------------------------------------------------------------------------------
# Responses (Ultrafeedback, AlpacaEval)
# --------------------------------------------------------------------------------------------------


def good_answer(rng: random.Random, slots: dict[str, str]) -> str:
    """On topic (uses the focus nouns), concise (2-4 sentences), no repetition."""
    both = [t for t in ADVICE if "{n1}" in t and "{n2}" in t]
    first = rng.choice(both)
    rest = rng.sample([t for t in ADVICE if t != first], rng.randint(1, 3))
    sentences = [fill(first, reslot(rng, slots))]
    sentences += [fill(t, rotate(reslot(rng, slots), rng)) for t in rest]
    if rng.random() < 0.3:
        body = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(sentences))
    else:
        body = " ".join(sentences)
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    if opener:
        body = opener + ("\n\n" if "\n" in body else " ") + body
    if closer:
        body = body + ("\n\n" if "\n" in body else " ") + closer
    return body


def offtopic_answer(rng: random.Random, slots: dict[str, str]) -> str:
    """Fluent and concise-ish, but about the nouns of another topic."""
    other = topic_slots(rng, other_topic(rng, slots["topic"]))
    sentences = [fill(t, reslot(rng, other)) for t in rng.sample(ADVICE, rng.randint(3, 5))]
    return " ".join(sentences)


def repetitive_answer(rng: random.Random, slots: dict[str, str]) -> str:
    """One on-topic sentence, then the same sentences said again."""
    first = fill(rng.choice(ADVICE), reslot(rng, slots, n2=rng.choice(GENERIC_NOUNS)))
    second = rng.choice(FILLER_SENTENCES)
    reps = rng.randint(2, 3)
    parts = []
    for i in range(reps):
        parts.append(first if i == 0 else "As I said, " + first[0].lower() + first[1:])
        parts.append(second)
    return " ".join(parts)


def rambling_answer(rng: random.Random, slots: dict[str, str]) -> str:
    """Long and generic: many filler sentences and at most one weak topical sentence."""
    sentences = rng.sample(FILLER_SENTENCES, rng.randint(5, 8))
    weak = fill("The {n1} is one of those things that can be {adj} sometimes.", slots)
    sentences.insert(rng.randint(1, len(sentences)), weak)
    return " ".join(sentences)


def bad_answer(rng: random.Random, slots: dict[str, str]) -> str:
    kind = rng.choice(["offtopic", "repetitive", "rambling"])
    if kind == "offtopic":
        return offtopic_answer(rng, slots)
    if kind == "repetitive":
        return repetitive_answer(rng, slots)
    return rambling_answer(rng, slots)


def mediocre_answer(rng: random.Random, slots: dict[str, str]) -> str:
    """On topic but with a filler sentence: used for equal-score (tied) pairs."""
    sentences = [fill(t, reslot(rng, slots)) for t in rng.sample(ADVICE, 2)]
    sentences.insert(rng.randint(0, 2), rng.choice(FILLER_SENTENCES))
    return " ".join(sentences)


def uf_prompt(rng: random.Random, seen: set[str]) -> tuple[str, dict[str, str]]:
    while True:
        topic = rng.choice(TOPIC_NAMES)
        slots = topic_slots(rng, topic)
        prompt = fill(rng.choice(UF_PROMPTS), slots)
        if prompt not in seen:
            seen.add(prompt)
            return prompt, slots


def messages(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]


def half_steps(lo: float, hi: float) -> list[float]:
    return [lo + 0.5 * i for i in range(round((hi - lo) / 0.5) + 1)]


def make_ultrafeedback_binarized(seed: int, n: int = 600) -> list[dict]:
    rng = random.Random(f"{seed}:ultrafeedback_binarized")
    seen: set[str] = set()
    rows = []
    for _ in range(n):
        prompt, slots = uf_prompt(rng, seen)
        u = rng.random()
        if u < 0.17:  # equal scores: similar quality, random order
            a = good_answer(rng, slots) if rng.random() < 0.5 else mediocre_answer(rng, slots)
            b = good_answer(rng, slots) if rng.random() < 0.5 else mediocre_answer(rng, slots)
            chosen, rejected = a, b
            score = rng.choice(half_steps(3.0, 9.0))
            s_chosen = s_rejected = score
        else:
            good, bad = good_answer(rng, slots), bad_answer(rng, slots)
            if rng.random() < 0.10:  # label noise: the worse text wins, by a small margin
                chosen, rejected = bad, good
                s_chosen = rng.choice(half_steps(5.0, 8.0))
                s_rejected = s_chosen - rng.choice([0.5, 1.0])
            else:
                chosen, rejected = good, bad
                s_chosen = rng.choice(half_steps(6.0, 10.0))
                s_rejected = max(1.0, s_chosen - rng.choice(half_steps(1.0, 6.0)))
        rows.append(
            {
                "prompt": prompt,
                "prompt_id": sha256_hex(prompt),
                "chosen": messages(prompt, chosen),
                "rejected": messages(prompt, rejected),
                "messages": messages(prompt, chosen),
                "score_chosen": float(s_chosen),
                "score_rejected": float(s_rejected),
            }
        )
    return rows


def make_ultrafeedback_cleaned(seed: int, n: int = 300) -> list[dict]:
    rng = random.Random(f"{seed}:ultrafeedback_cleaned")
    seen: set[str] = set()
    rows = []
    quarter = [1.0 + 0.25 * i for i in range(17)]  # 1.0 .. 5.0
    for _ in range(n):
        prompt, slots = uf_prompt(rng, seen)
        good, bad = good_answer(rng, slots), bad_answer(rng, slots)
        if rng.random() < 0.10:  # label noise
            chosen, rejected = bad, good
            r_chosen = rng.choice(quarter[8:14])
            r_rejected = r_chosen - rng.choice([0.25, 0.5])
        else:
            chosen, rejected = good, bad
            r_chosen = rng.choice(quarter[10:])
            r_rejected = rng.choice([q for q in quarter if q <= r_chosen - 0.75])
        rows.append(
            {
                "source": rng.choice(UF_SOURCES),
                "prompt": prompt,
                "chosen": messages(prompt, chosen),
                "chosen-rating": float(r_chosen),
                "chosen-model": rng.choice(STRONG_MODELS if rng.random() < 0.7 else WEAK_MODELS),
                "rejected": messages(prompt, rejected),
                "rejected-rating": float(r_rejected),
                "rejected-model": rng.choice(WEAK_MODELS if rng.random() < 0.7 else STRONG_MODELS),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Reddit posts, news articles, summaries (TL;DR, CNN/DM)
# --------------------------------------------------------------------------------------------------


def reddit_post(rng: random.Random) -> dict:
    topic = rng.choice(TOPIC_NAMES)
    slots = topic_slots(rng, topic)
    subs = TOPICS[topic]["subreddits"]
    subreddit = rng.choice(subs) if rng.random() < 0.8 else rng.choice(GENERAL_SUBREDDITS)
    # 60..250 words; most posts are short so that the comparisons file (one post copy per row) stays small.
    target = rng.randint(44, 54) if rng.random() < 0.94 else rng.randint(80, 235)
    sentences = []
    opener = rng.choice(POST_OPEN) if rng.random() < 0.6 else ""
    if opener:
        sentences.append(fill(opener, slots))
    story = list(POST_STORY)
    rng.shuffle(story)
    closer = fill(rng.choice(POST_CLOSE), reslot(rng, slots))
    words = len(" ".join(sentences).split()) + len(closer.split())
    for template in story:
        sentence = fill(
            template, reslot(rng, rotate(slots, rng)) if rng.random() < 0.4 else reslot(rng, slots)
        )
        sentences.append(sentence)
        words += len(sentence.split())
        if words >= target:
            break
    while words < 60:  # pad short posts to the 60-word minimum with short sentences
        sentence = fill(rng.choice(POST_SHORT), reslot(rng, slots))
        sentences.append(sentence)
        words += len(sentence.split())
    sentences.append(closer)
    # Paragraphs, as Reddit posts have them.
    paras, cur = [], []
    for s in sentences:
        cur.append(s)
        if len(cur) >= 3 and rng.random() < 0.5:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return {
        "id": "t3_" + base36(rng, 6),
        "subreddit": subreddit,
        "title": fill(rng.choice(TITLES), reslot(rng, slots)),
        "post": "\n\n".join(paras),
        "slots": slots,
    }


def news_slots(rng: random.Random) -> dict[str, str]:
    topic = rng.choice(TOPIC_NAMES)
    slots = topic_slots(rng, topic)
    city, city2 = rng.sample(CITIES, 2)
    slots.update(
        {
            "city": city,
            "city2": city2,
            "org": rng.choice(ORGS),
            "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            "pct": str(rng.randint(3, 60)),
            "big": f"{rng.randint(2, 95) * 1000:,}",
            "year": str(rng.randint(1998, 2014)),
            "age": str(rng.randint(24, 71)),
        }
    )
    return slots


def news_article(rng: random.Random, lo: int, hi: int) -> tuple[str, dict[str, str]]:
    slots = news_slots(rng)
    target = rng.randint(lo, hi)
    if rng.random() < 0.5:
        dateline = f"{slots['city'].upper()} (CNN) -- " if rng.random() < 0.6 else "(CNN) -- "
        site = "cnn"
        head = ""
    else:
        site = "dailymail"
        d, mon, yr = rng.randint(1, 28), rng.choice(["March", "June", "October"]), rng.randint(2010, 2015)
        head = (
            f"By . {slots['name']} . PUBLISHED: . {rng.randint(10, 23)}:{rng.randint(10, 59)} EST, "
            f"{d} {mon} {yr} . | . UPDATED: . {rng.randint(10, 23)}:{rng.randint(10, 59)} EST, "
            f"{d} {mon} {yr} . "
        )
        dateline = ""
    sentences = []
    words = len(head.split())
    pool = list(NEWS)
    while words < target and pool:
        template = pool.pop(rng.randrange(len(pool)))
        sentence = fill(template, reslot(rng, slots))
        if site == "dailymail" and rng.random() < 0.1:
            sentence = sentence.replace(" the ", " the £2million ", 1)
        sentences.append(sentence)
        words += len(sentence.split())
    article = head + dateline + " ".join(sentences)
    slots["site"] = site
    return article, slots


def good_summary(rng: random.Random, slots: dict[str, str]) -> str:
    return " " + fill(
        rng.choice(GOOD_SUMMARY), reslot(rng, rotate(slots, rng) if rng.random() < 0.3 else slots)
    )


def bad_summary(rng: random.Random, slots: dict[str, str]) -> str:
    kind = rng.choice(["offtopic", "repetitive", "rambling"])
    if kind == "offtopic":
        other = topic_slots(rng, other_topic(rng, slots["topic"]))
        return " " + fill(rng.choice(GOOD_SUMMARY), other)
    if kind == "repetitive":
        clause = fill(
            rng.choice(["my {n1} is {adj}", "the {n1} is a problem", "I need help with the {n1}"]),
            reslot(rng, slots),
        )
        tail = rng.choice(["help.", "what do I do.", "so yeah."])
        return " " + ", ".join([clause] * rng.randint(2, 3)) + ", " + tail
    return " " + fill(rng.choice(RAMBLING_SUMMARY), reslot(rng, slots))


def degrade(rng: random.Random, summary: str, slots: dict[str, str], k: int) -> str:
    """Apply ``k`` small edits that each make ``summary`` worse under the hidden rule."""
    focus = [slots["n1"], slots["n2"], slots["n3"]]
    tokens = summary.split(" ")[1:]  # leading space
    other_nouns = TOPICS[other_topic(rng, slots["topic"])]["nouns"]
    for _ in range(k):
        focus_idx = [i for i, t in enumerate(tokens) if t.strip(".,?!") in focus]
        op = rng.choice(["generic", "offtopic", "filler", "repeat"])
        if op in ("generic", "offtopic") and focus_idx:
            i = rng.choice(focus_idx)
            word = tokens[i].strip(".,?!")
            new = rng.choice(GENERIC_NOUNS) if op == "generic" else rng.choice(other_nouns)
            tokens[i] = tokens[i].replace(word, new, 1)
        elif op == "filler" or (op != "repeat" and not focus_idx):
            tokens.insert(rng.randint(0, len(tokens)), rng.choice(FILLER_WORDS))
        else:
            span = rng.randint(2, 4)
            start = rng.randint(0, max(0, len(tokens) - span))
            tokens[start + span : start + span] = tokens[start : start + span]
    return " " + " ".join(tokens)


def comparison_pair(rng: random.Random, slots: dict[str, str], goods: list[str]) -> tuple[str, str, float]:
    """(better, worse, gap g) for one comparison of a post/article."""
    g = rng.random()
    better = rng.choice(goods)
    if g < 0.75:
        worse = degrade(rng, better, slots, 1 + int(8 * g))
        if worse == better:  # cannot happen (every edit changes a token), kept as a guard
            worse = bad_summary(rng, slots)
    else:
        worse = bad_summary(rng, slots)
    return better, worse, g


def comparison_row(
    rng: random.Random,
    info: dict,
    slots: dict[str, str],
    goods: list[str],
    worker: str,
    batch: str,
    split: str,
) -> dict:
    better, worse, g = comparison_pair(rng, slots, goods)
    confidence = max(1, min(9, round(1 + 8 * g + rng.gauss(0.0, 0.9))))
    flip = rng.random() < 0.02 + 0.25 * (1.0 - g) ** 2
    preferred, other = (worse, better) if flip else (better, worse)
    first_is_preferred = rng.random() < 0.5
    texts = [preferred, other] if first_is_preferred else [other, preferred]
    policies = [rng.choice(GOOD_POLICIES), rng.choice(BAD_POLICIES)]
    if not first_is_preferred:
        policies.reverse()
    summaries = [
        {"text": t, "policy": p, "note": rng.choice(NOTES) if rng.random() < 0.04 else None}
        for t, p in zip(texts, policies)
    ]
    null_conf = rng.random() < 0.10
    return {
        "info": info,
        "summaries": summaries,
        "choice": 0 if first_is_preferred else 1,
        "worker": worker,
        "batch": batch,
        "split": split,
        "extra": {"confidence": None if null_conf else int(confidence)},
    }


def split_counts(rng: random.Random, total: int, lo: int, hi: int) -> list[int]:
    """Random group sizes in [lo, hi] (the last one possibly smaller, >= 2) summing to ``total``."""
    counts: list[int] = []
    while sum(counts) < total:
        counts.append(min(rng.randint(lo, hi), total - sum(counts)))
    if len(counts) > 1 and counts[-1] < 2:
        last = counts.pop()
        counts[-1] += last
    return counts


def make_tldr_comparisons(seed: int, n_reddit: int = 1170, n_cnndm: int = 100) -> list[dict]:
    """``n_reddit`` Reddit comparisons (4-13 per post, 2-5 per long post) and ``n_cnndm`` CNN/DM ones (3-5 per article)."""
    rng = random.Random(f"{seed}:tldr_comparisons")
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    workers = ["".join(rng.choice(alnum) for _ in range(30)) for _ in range(40)]
    rows = []
    split_rows = {"train": 0, "valid1": 0, "valid2": 0}
    split_share = {"train": 0.87, "valid1": 0.08, "valid2": 0.05}
    n_done = 0
    while n_done < n_reddit:
        post = reddit_post(rng)
        slots = post["slots"]
        # Several comparisons per post (fewer for the rare long posts, which cost the most bytes).
        long_post = len(post["post"].split()) > 100
        count = min(rng.randint(2, 5) if long_post else rng.randint(4, 13), n_reddit - n_done)
        if n_reddit - n_done - count == 1:
            count += 1
        # All comparisons of a post share its split; give the post to the split furthest below its share.
        split = max(split_rows, key=lambda k: split_share[k] * (n_done + count) - split_rows[k])
        split_rows[split] += count
        n_done += count
        info = {
            "id": post["id"],
            "post": post["post"],
            "title": post["title"],
            "subreddit": post["subreddit"],
            "site": None,
            "article": None,
        }
        batch = rng.choice(REDDIT_BATCHES)
        goods = [good_summary(rng, slots) for _ in range(3)]
        for _ in range(count):
            rows.append(comparison_row(rng, info, slots, goods, rng.choice(workers), batch, split))
    for count in split_counts(rng, n_cnndm, 3, 5):
        article, slots = news_article(rng, 150, 175)
        info = {
            "id": sha1_hex(f"article-{slots['name']}-{rng.random()}"),
            "post": None,
            "title": fill(rng.choice(HEADLINES), reslot(rng, slots)),
            "subreddit": None,
            "site": slots["site"],
            "article": article,
        }
        batch = rng.choices(["batch0_cnndm", "cnndm0", "cnndm2"], weights=[2, 1, 1])[0]
        split = "train" if batch == "batch0_cnndm" else "valid2"
        goods = [good_summary(rng, slots) for _ in range(3)]
        for _ in range(count):
            rows.append(comparison_row(rng, info, slots, goods, rng.choice(workers), batch, split))
    return rows


def make_tldr_sft(seed: int, n: int = 400) -> list[dict]:
    rng = random.Random(f"{seed}:tldr_sft")
    rows = []
    for _ in range(n):
        post = reddit_post(rng)
        rows.append(
            {
                "id": post["id"],
                "subreddit": post["subreddit"],
                "title": post["title"],
                "post": post["post"],
                "summary": good_summary(rng, post["slots"]),
            }
        )
    return rows


def make_cnn_dailymail(seed: int, n: int = 200) -> list[dict]:
    rng = random.Random(f"{seed}:cnn_dailymail")
    rows = []
    for i in range(n):
        article, slots = news_article(rng, 150, 380)
        lines = [fill(t, reslot(rng, slots)) for t in rng.sample(HIGHLIGHTS, rng.randint(3, 4))]
        rows.append(
            {
                "article": article,
                "highlights": "\n".join(lines),
                "id": sha1_hex(f"http://www.{slots['site']}.com/story/{seed}/{i}/{rng.random()}"),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# AlpacaEval
# --------------------------------------------------------------------------------------------------

ALPACA_INSTRUCTIONS = [
    ("Write a haiku about the {n1}.", "haiku"),
    ("List three tips for dealing with the {n1} when the {n2} is {adj}.", "list"),
    ("What is the {n1}, and why does it matter for the {n2}?", "explain"),
    ("Suggest a name for a {topic} blog about the {n1} and the {n2}.", "name"),
    ("Classify the following word into one of these topics: {topics}. Word: {n1}", "classify"),
    ("Write the opening sentence of a short story about the {adj} {n1}.", "story"),
    ("Give me a short explanation of how to {v} the {n1}.", "explain"),
    ("I want to get better at {topic}. Where should I start with the {n1}?", "explain"),
]


def alpaca_output(rng: random.Random, kind: str, slots: dict[str, str]) -> str:
    if kind == "haiku":
        return fill("The {adj} {n1} waits\nquiet {n2} in the morning\n{topic} starts again", slots)
    if kind == "list":
        tips = [fill(t, reslot(rng, slots)) for t in rng.sample(ADVICE, 3)]
        return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(tips))
    if kind == "name":
        return fill('"{N1} and {N2}: A {Topic} Journal"', slots)
    if kind == "classify":
        return cap(slots["topic"])
    if kind == "story":
        return fill(
            "Nobody in the village could explain why the {n1} had turned {adj} overnight — "
            "not even the old woman who looked after the {n2}.",
            slots,
        )
    return " ".join(fill(t, reslot(rng, slots)) for t in rng.sample(ADVICE, rng.randint(2, 3)))


def make_alpaca_eval(seed: int, n: int = 200) -> list[dict]:
    rng = random.Random(f"{seed}:alpaca_eval")
    seen: set[str] = set()
    by_dataset: dict[str, list[dict]] = {name: [] for name in ALPACA_DATASETS}
    while sum(len(v) for v in by_dataset.values()) < n:
        slots = topic_slots(rng, rng.choice(TOPIC_NAMES))
        slots["topics"] = ", ".join(TOPIC_NAMES)
        template, kind = rng.choice(ALPACA_INSTRUCTIONS)
        instruction = fill(template, slots)
        if instruction in seen:
            continue
        seen.add(instruction)
        dataset = rng.choices(ALPACA_DATASETS, weights=ALPACA_WEIGHTS)[0]
        by_dataset[dataset].append(
            {
                "dataset": dataset,
                "instruction": instruction,
                "output": alpaca_output(rng, kind, slots),
                "generator": "text_davinci_003",
            }
        )
    return [row for name in ALPACA_DATASETS for row in by_dataset[name]]  # grouped, as in the real file


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

FILES = [
    "ultrafeedback_binarized.jsonl",
    "ultrafeedback_cleaned.jsonl",
    "tldr_comparisons.jsonl",
    "tldr_sft.jsonl",
    "cnn_dailymail.jsonl",
    "alpaca_eval.json",
]


def generate(out: Path | str, seed: int = 0) -> list[Path]:
    """Write all sample files into ``out``; return their paths (in ``FILES`` order)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / FILES[0], make_ultrafeedback_binarized(seed))
    write_jsonl(out / FILES[1], make_ultrafeedback_cleaned(seed))
    write_jsonl(out / FILES[2], make_tldr_comparisons(seed))
    write_jsonl(out / FILES[3], make_tldr_sft(seed))
    write_jsonl(out / FILES[4], make_cnn_dailymail(seed))
    # Same layout as the real AlpacaEval file: a JSON array, 2-space indent, no space after ':'.
    text = json.dumps(make_alpaca_eval(seed), ensure_ascii=False, indent=2, separators=(",", ":"))
    with open(out / FILES[5], "w", encoding="utf-8", newline="\n") as f:
        f.write(text + "\n")
    return [out / name for name in FILES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="drdo_ray/data/samples", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.seed):
        n = path.read_text(encoding="utf-8").count("\n") if path.suffix == ".jsonl" else None
        size = path.stat().st_size
        print(f"{path}  {size / 1024:.0f} KiB" + (f"  {n} rows" if n is not None else ""))


if __name__ == "__main__":
    main()
