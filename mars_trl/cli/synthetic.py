"""A preference set the project generates itself: labels correct by construction, pairs of graded difficulty.

Each family pairs a correct answer with a wrong one whose error is gross (easy), moderate (medium) or subtle (hard),
so a margin-aware method has something to find: the hard pairs stay close to the decision boundary longest.

- arithmetic: "What is 37 + 45?" answered with the true sum; wrong by a lot (easy), by 10 (medium), by 1 (hard).
- capitals: the true capital from an embedded table; a city on another continent (easy), another capital on the
  same continent (medium), the country's largest non-capital city (hard).
- spelling: a clean sentence against the same sentence with 4 typos (easy), 2 (medium), 1 (hard).
- format: "exactly three words" answered in three; a long sentence (easy), six words (medium), four (hard).

Every rejected answer differs from the chosen one only in what makes it wrong, so the label is correct by
construction. Deterministic for a seed (`random.Random`, never Python's salted `hash`).
"""

from __future__ import annotations

import random

from datasets import Dataset

DIFFICULTIES = ("easy", "medium", "hard")

# country, capital, largest non-capital city, continent
CAPITALS = [
    ("Australia", "Canberra", "Sydney", "Oceania"),
    ("Canada", "Ottawa", "Toronto", "America"),
    ("Brazil", "Brasilia", "Sao Paulo", "America"),
    ("Turkey", "Ankara", "Istanbul", "Asia"),
    ("Switzerland", "Bern", "Zurich", "Europe"),
    ("Morocco", "Rabat", "Casablanca", "Africa"),
    ("Nigeria", "Abuja", "Lagos", "Africa"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City", "Asia"),
    ("New Zealand", "Wellington", "Auckland", "Oceania"),
    ("India", "New Delhi", "Mumbai", "Asia"),
    ("United States", "Washington", "New York", "America"),
    ("Germany", "Berlin", "Hamburg", "Europe"),
    ("Italy", "Rome", "Milan", "Europe"),
    ("Spain", "Madrid", "Barcelona", "Europe"),
    ("Japan", "Tokyo", "Osaka", "Asia"),
    ("Egypt", "Cairo", "Alexandria", "Africa"),
    ("Kenya", "Nairobi", "Mombasa", "Africa"),
    ("Argentina", "Buenos Aires", "Cordoba", "America"),
    ("Poland", "Warsaw", "Krakow", "Europe"),
    ("China", "Beijing", "Shanghai", "Asia"),
]

SENTENCES = [
    "The library opens at nine in the morning and closes at six in the evening.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Please remember to bring your umbrella because it might rain later today.",
    "The committee will announce the results after the meeting next week.",
    "Regular exercise improves both physical health and mental wellbeing.",
    "The train to the airport leaves every fifteen minutes from platform two.",
    "Our neighbours planted tomatoes, peppers and basil in their garden this spring.",
    "The museum exhibition explores the history of navigation and map making.",
    "She finished reading the novel before the book club met on Thursday.",
    "Fresh bread from the bakery on the corner sells out before noon.",
]

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "silver", "brown"]
ANIMALS = ["horse", "eagle", "dolphin", "tiger", "rabbit", "owl", "camel", "turtle"]


def _typos(sentence: str, count: int, rng: random.Random) -> str:
    words = sentence.split(" ")

    def swaps(word: str) -> list[int]:
        core = word.strip(".,")
        # Inner positions whose letters differ, so the swap really misspells the word.
        return [j for j in range(1, len(core) - 1) if core[j] != core[j + 1]]

    candidates = [i for i, w in enumerate(words) if len(w.strip(".,")) >= 4 and swaps(w)]
    for i in rng.sample(candidates, min(count, len(candidates))):
        word = words[i]
        j = rng.choice(swaps(word))
        words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]  # swap two adjacent letters
    return " ".join(words)


def _arithmetic(rng: random.Random, difficulty: str) -> tuple[str, str, str]:
    a, b = rng.randint(12, 89), rng.randint(12, 89)
    total = a + b
    wrong = {
        "easy": total + rng.randint(150, 900),
        "medium": total + rng.choice([-10, 10]),
        "hard": total + rng.choice([-1, 1]),
    }[difficulty]
    return f"What is {a} + {b}?", f"{a} + {b} = {total}.", f"{a} + {b} = {wrong}."


def _capital(rng: random.Random, difficulty: str) -> tuple[str, str, str]:
    country, capital, largest, continent = rng.choice(CAPITALS)
    if difficulty == "hard":
        wrong = largest
    else:
        same = [c for c in CAPITALS if c[3] == continent and c[0] != country]
        other = [c for c in CAPITALS if c[3] != continent]
        wrong = rng.choice(same if difficulty == "medium" else other)[1]
    return (
        f"What is the capital of {country}?",
        f"The capital of {country} is {capital}.",
        f"The capital of {country} is {wrong}.",
    )


def _spelling(rng: random.Random, difficulty: str) -> tuple[str, str, str]:
    sentence = rng.choice(SENTENCES)
    count = {"easy": 4, "medium": 2, "hard": 1}[difficulty]
    return "Write one sentence, spelled correctly.", sentence, _typos(sentence, count, rng)


def _format(rng: random.Random, difficulty: str) -> tuple[str, str, str]:
    # A word-count constraint: visible to cased and uncased tokenizers alike (a case constraint is not).
    color, animal = rng.choice(COLORS), rng.choice(ANIMALS)
    wrong = {
        "easy": f"I would say that my favourite colour is {color} and my favourite animal is the {animal}",
        "medium": f"the colour {color} and the {animal}",
        "hard": f"{color} and a {animal}",
    }[difficulty]
    return "Name a colour and an animal in exactly three words.", f"{color} and {animal}", wrong


FAMILIES = {"arithmetic": _arithmetic, "capitals": _capital, "spelling": _spelling, "format": _format}


def make_preference_dataset(num_pairs: int, seed: int = 0, conversational: bool = False) -> Dataset:
    """
    `num_pairs` preference pairs cycling through the families and difficulties, with `task` and `difficulty` columns.

    Example:

    ```python
    >>> from mars_trl.cli.synthetic import make_preference_dataset
    >>> data = make_preference_dataset(8, seed=0)
    >>> data.column_names
    ['prompt', 'chosen', 'rejected', 'task', 'difficulty']
    >>> row = data[0]
    >>> row["task"], row["difficulty"], row["chosen"] != row["rejected"]
    ('arithmetic', 'easy', True)
    ```
    """
    rng = random.Random(seed)
    rows = []
    families = list(FAMILIES)
    for i in range(num_pairs):
        task = families[i % len(families)]
        difficulty = DIFFICULTIES[(i // len(families)) % len(DIFFICULTIES)]
        prompt, chosen, rejected = FAMILIES[task](rng, difficulty)
        if conversational:
            prompt = [{"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "task": task, "difficulty": difficulty})
    return Dataset.from_list(rows)
