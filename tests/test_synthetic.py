"""The generated preference set: deterministic, labels correct by construction, graded difficulty."""

import collections
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from trl.data_utils import is_conversational

from mars_trl.cli.synthetic import CAPITALS, DIFFICULTIES, SENTENCES, make_preference_dataset


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 400), st.integers(0, 10_000))
def test_deterministic_sized_and_never_degenerate(n, seed):
    a, b = make_preference_dataset(n, seed), make_preference_dataset(n, seed)
    assert a.to_list() == b.to_list() and len(a) == n
    assert all(r["chosen"] != r["rejected"] for r in a)


def test_seeds_differ_and_difficulties_balance():
    assert make_preference_dataset(50, 0)["chosen"] != make_preference_dataset(50, 1)["chosen"]
    counts = collections.Counter(zip(*[make_preference_dataset(1200, 3)[c] for c in ("task", "difficulty")]))
    assert len(counts) == 12 and max(counts.values()) - min(counts.values()) <= 1


def test_labels_are_correct_by_construction():
    capitals = {country: capital for country, capital, _, _ in CAPITALS}
    for row in make_preference_dataset(600, seed=7):
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        if row["task"] == "arithmetic":
            a, b = map(int, re.findall(r"\d+", prompt))
            assert chosen == f"{a} + {b} = {a + b}." and rejected != chosen
            gap = abs(int(rejected.split("= ")[1].rstrip(".")) - (a + b))
            assert gap == {"easy": gap if gap >= 150 else -1, "medium": 10, "hard": 1}[row["difficulty"]]
        elif row["task"] == "capitals":
            country = prompt.removeprefix("What is the capital of ").rstrip("?")
            assert chosen.endswith(f"{capitals[country]}.") and not rejected.endswith(f"{capitals[country]}.")
        elif row["task"] == "spelling":
            assert chosen in SENTENCES and rejected not in SENTENCES
            typos = sum(x != y for x, y in zip(chosen.split(), rejected.split()))
            assert typos == {"easy": 4, "medium": 2, "hard": 1}[row["difficulty"]]
        else:
            assert len(chosen.split()) == 3
            assert len(rejected.split()) == {"easy": 16, "medium": 6, "hard": 4}[row["difficulty"]]


def test_conversational_form():
    data = make_preference_dataset(8, seed=0, conversational=True)
    assert is_conversational(data[0]) and data[0]["prompt"][-1]["role"] == "user"
    assert set(data["difficulty"]) <= set(DIFFICULTIES)
