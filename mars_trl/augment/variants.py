"""Variant validation: which of an augmenter's variants of a pair are usable, and why the others were dropped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data.fields import PairLayout, layout_fields, pair_core, pair_key, pair_layout
from ..names import TEXT_COLUMNS


def _response_blank(pair: Mapping, layout: PairLayout, side: str) -> bool:
    texts = [text for path, text, _ in layout_fields(pair, layout) if path[0] == side]
    return not any(text.strip() for text in texts)


def _structure_problem(pair: Mapping, variant: Any) -> str | None:
    """Why `variant` does not have the structure of `pair`, or None."""
    if not isinstance(variant, Mapping):
        return f"expected a dict, got {type(variant).__name__}"
    expected = [key for key in TEXT_COLUMNS if key in pair]
    if sorted(variant) != sorted(expected):
        return f"keys {sorted(variant)} != expected {sorted(expected)}"
    for key in expected:
        original, value = pair[key], variant[key]
        if isinstance(original, str):
            if not isinstance(value, str):
                return f"'{key}' must be a string like the original, got {type(value).__name__}"
            continue
        if not isinstance(value, list) or len(value) != len(original):
            got = f"{len(value)} messages" if isinstance(value, list) else type(value).__name__
            return f"'{key}' must be a list of {len(original)} messages like the original, got {got}"
        for i, (old, new) in enumerate(zip(original, value)):
            if not isinstance(new, Mapping):
                return f"'{key}'[{i}] must be a message dict, got {type(new).__name__}"
            if new.get("role") != old.get("role"):
                return f"'{key}'[{i}] role changed from {old.get('role')!r} to {new.get('role')!r}"
            if isinstance(old.get("content"), str) and not isinstance(new.get("content"), str):
                return f"'{key}'[{i}] content must be a string, got {type(new.get('content')).__name__}"
            if {a: b for a, b in new.items() if a != "content"} != {a: b for a, b in old.items() if a != "content"}:
                return f"'{key}'[{i}] changed more than its content"
    return None


def validate_variants(pair: Mapping, variants: Any, k: int) -> tuple[list[dict], list[str]]:
    r"""
    Keep the usable variants of `pair`, at most `k`, and say why the others were dropped.

    A variant is dropped when it is not a dict with exactly the pair's keys among `"prompt"`, `"chosen"`,
    `"rejected"` in the pair's format (strings stay strings; messages keep count, roles, order and every key but
    `"content"`), when its chosen or rejected response is empty, when it equals the original pair, when its chosen
    equals its rejected, or when it repeats an earlier variant. Variants beyond the first `k` usable ones are dropped
    too. Problems are short strings meant for logs and counters.

    Example:

    ```python
    >>> from mars_trl.augment import validate_variants
    >>> pair = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 0}
    >>> ok, problems = validate_variants(
    ...     pair,
    ...     [{"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}, {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ...      {"prompt": "2+2?", "chosen": "", "rejected": "5"}, {"chosen": "4", "rejected": "5"}],
    ...     k=8,
    ... )
    >>> ok
    [{'prompt': '2 + 2?', 'chosen': '4', 'rejected': '5'}]
    >>> for problem in problems:
    ...     print(problem)
    variant 1: identical to the original pair
    variant 2: empty chosen
    variant 3: keys ['chosen', 'rejected'] != expected ['chosen', 'prompt', 'rejected']
    ```
    """
    if not isinstance(variants, (list, tuple)):
        return [], [f"expected a list of variants, got {type(variants).__name__}"]
    original = pair_core(pair)
    ok: list[dict] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        problem = _structure_problem(pair, variant)
        if problem is None:
            variant = pair_core(variant)
            try:
                layout = pair_layout(variant)
            except (TypeError, ValueError) as err:
                layout, problem = None, str(err)
            if layout is not None:
                blank = [side for side in ("chosen", "rejected") if _response_blank(variant, layout, side)]
                key = pair_key(variant)
                if blank:
                    problem = f"empty {' and '.join(blank)}"
                elif variant == original:
                    problem = "identical to the original pair"
                elif variant["chosen"] == variant["rejected"]:
                    problem = "chosen == rejected"
                elif key in seen:
                    problem = f"duplicate of variant {seen[key]}"
                else:
                    seen[key] = i
        if problem is not None:
            problems.append(f"variant {i}: {problem}")
        elif len(ok) < k:
            ok.append(variant)
        else:
            problems.append(f"variant {i}: beyond k={k}")
    return ok, problems
