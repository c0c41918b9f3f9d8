"""The task set of benchmarks/quality_bench.py: short fact-recall and reasoning items from
templates, scored by exact match (issue 18 point 6).

Every item is a (document, question, cloze, answer) tuple: the document and question are what the
first agent reads, the cloze ("The capital of Peru is") starts the answering agent's reply, and
the answer is one word or number. An item is answered correctly when greedy decoding after the
cloze produces exactly the answer's tokens and then ends the word (the next token does not
continue it with a letter or digit). That is computed in one teacher-forced forward pass: greedy
output starts with tokens g1..gn iff the argmax after the cloze is g1, the argmax after g1 is g2,
and so on; so the score is the same as generating, at a fraction of the cost.

The templates were picked by the direct-mode accuracy of SmolLM2-135M-Instruct on a pilot of 16
items each drawn with a different seed ("pilot-<template>"); templates it could not do in direct
mode (the colour of things, the month after, the day after, items with four or more facts to pick
from) were dropped. Nothing else was chosen with these items: no codec, policy or setting was
ever tuned on them. The items are a pure function of SEED and the counts below.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

SEED = "avp-quality-v1"

NAMES = ["Anna", "Ben", "Cara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
         "Karin", "Leo", "Maya", "Nils", "Olga", "Paul", "Rosa", "Sam", "Tara", "Victor"]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Norway", "Oslo"),
            ("Greece", "Athens"), ("Poland", "Warsaw"), ("Portugal", "Lisbon"),
            ("Austria", "Vienna"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("England", "London"), ("Canada", "Ottawa"), ("Ireland", "Dublin"),
            ("Sweden", "Stockholm")]
LANGUAGES = [("France", "French"), ("Germany", "German"), ("Spain", "Spanish"),
             ("Italy", "Italian"), ("Japan", "Japanese"), ("China", "Chinese"),
             ("Russia", "Russian"), ("Portugal", "Portuguese"), ("Greece", "Greek"),
             ("Sweden", "Swedish"), ("Poland", "Polish"), ("England", "English")]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"),
             ("happy", "sad"), ("day", "night"), ("old", "young"), ("open", "closed"),
             ("light", "dark"), ("wet", "dry"), ("hard", "soft"), ("early", "late"),
             ("rich", "poor"), ("tall", "short"), ("full", "empty"), ("black", "white")]
DOOR_COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple"]


@dataclass(frozen=True)
class Item:
    id: str
    template: str
    kind: str  # "recall-context", "recall-world" or "reasoning"
    document: str
    question: str
    cloze: str
    answer: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Fields = tuple[str, str, str, str]  # document, question, cloze, answer


# -- fact recall from the document (the handed-over context holds the answer) ---------------------
def capital_in_context(r: random.Random) -> Fields:
    pairs = r.sample(CAPITALS, 3)
    country, city = pairs[r.randrange(3)]
    doc = "\n".join(f"The capital of {a} is {b}." for a, b in pairs)
    return doc, f"What is the capital of {country}?", f"The capital of {country} is", city


def who_lives_where(r: random.Random) -> Fields:
    names = r.sample(NAMES, 2)
    cities = r.sample([c for _, c in CAPITALS], 2)
    i = r.randrange(2)
    doc = "\n".join(f"{n} lives in {c}." for n, c in zip(names, cities, strict=True))
    return doc, f"Where does {names[i]} live?", f"{names[i]} lives in", cities[i]


def door_code(r: random.Random) -> Fields:
    colours = r.sample(DOOR_COLOURS, 3)
    codes = [str(r.randint(100, 999)) for _ in colours]
    i = r.randrange(3)
    doc = "\n".join(f"The {c} door code is {n}." for c, n in zip(colours, codes, strict=True))
    return doc, f"What is the {colours[i]} door code?", f"The {colours[i]} door code is", codes[i]


# -- fact recall from the model's own knowledge ---------------------------------------------------
def capital(pair: tuple[str, str]) -> Fields:
    country, city = pair
    return ("Geography quiz.", f"What is the capital of {country}?",
            f"The capital of {country} is", city)


def language(pair: tuple[str, str]) -> Fields:
    country, lang = pair
    return ("Geography quiz.", f"What language do people in {country} speak?",
            f"People in {country} speak", lang)


def opposite(pair: tuple[str, str]) -> Fields:
    word, opp = pair
    return ("Vocabulary quiz.", f"What is the opposite of '{word}'?",
            f"The opposite of {word} is", opp)


# -- short reasoning ------------------------------------------------------------------------------
def next_number(n: int) -> Fields:
    return ("Counting quiz.", f"What number comes after {n}?", f"The number after {n} is",
            str(n + 1))


def larger(r: random.Random) -> Fields:
    a, b = r.sample(range(2, 99), 2)
    return ("Number quiz.", f"Which number is larger, {a} or {b}?", "The larger number is",
            str(max(a, b)))


def add_small(ab: tuple[int, int]) -> Fields:
    a, b = ab
    return "Arithmetic quiz.", f"What is {a} plus {b}?", f"{a} plus {b} equals", str(a + b)


# (name, kind, how many, maker). Drawn templates use their own Random(f"{SEED}/{name}") and skip
# duplicates; enumerated ones take every element of their pool (no duplicates possible).
Drawn = Callable[[random.Random], Fields]
DRAWN: list[tuple[str, str, int, Drawn]] = [
    ("capital_in_context", "recall-context", 50, capital_in_context),
    ("who_lives_where", "recall-context", 50, who_lives_where),
    ("door_code", "recall-context", 50, door_code),
    ("larger", "reasoning", 40, larger),
]
ENUMERATED: list[tuple[str, str, list[Fields]]] = [
    ("capital", "recall-world", [capital(p) for p in CAPITALS]),
    ("language", "recall-world", [language(p) for p in LANGUAGES]),
    ("opposite", "recall-world", [opposite(p) for p in OPPOSITES]),
    ("next_number", "reasoning", [next_number(n) for n in range(5, 95, 2)]),
    ("add_small", "reasoning", [add_small((a, b)) for a in range(1, 6) for b in range(1, 5)]),
]


def items(limit: int | None = None) -> list[Item]:
    """The task set, in a fixed interleaved order (so a prefix of it is a balanced sample)."""
    per: list[list[Item]] = []
    for name, kind, count, make in DRAWN:
        r = random.Random(f"{SEED}/{name}")
        seen: set[Fields] = set()
        out: list[Item] = []
        while len(out) < count:
            f = make(r)
            if f not in seen:
                seen.add(f)
                out.append(Item(f"{name}-{len(out):03d}", name, kind, *f))
        per.append(out)
    for name, kind, pool in ENUMERATED:
        per.append([Item(f"{name}-{i:03d}", name, kind, *f) for i, f in enumerate(pool)])
    # Round-robin over templates: item k of every template before item k + 1 of any.
    merged = [it for k in range(max(map(len, per))) for group in per if k < len(group)
              for it in [group[k]]]
    return merged if limit is None else merged[:limit]


_WORD_CHAR = re.compile(r"[A-Za-z0-9]")


def continues_word(token_text: str) -> bool:
    """Does this decoded token glue onto the word before it (no leading space or punctuation)?"""
    return bool(token_text) and _WORD_CHAR.match(token_text) is not None


def exact_match(predicted: list[int], gold: list[int], after_text: str) -> bool:
    """Greedy decoding produced exactly `gold` and then ended the word: `predicted` are the
    argmax ids at the positions that predict gold[0..n-1], `after_text` the decoded argmax at the
    position after the last gold token."""
    return list(predicted) == list(gold) and not continues_word(after_text)


def word_of(text: str) -> str:
    """The first word of a generated reply (what an answer extractor would keep)."""
    m = re.match(r"\s*([A-Za-z0-9']+)", text)
    return m.group(1) if m else ""
