"""The augmenter interface, and the format helpers that every augmenter shares.

A preference pair is a dict in one of TRL's four dataset formats: standard (strings) or conversational (lists of
`{"role", "content"}` messages), each with an explicit `"prompt"` or with the prompt implicit in `"chosen"` and
`"rejected"`. The helpers below turn any of them into a flat list of text fields, so an augmenter rewrites strings
and never handles formats itself.

Field paths are tuples whose first element says which part of the pair a text belongs to:

| format                        | prompt fields                      | response fields                        |
|-------------------------------|------------------------------------|----------------------------------------|
| standard, explicit prompt     | `("prompt",)`                      | `("chosen",)`, `("rejected",)`         |
| standard, implicit prompt     | `("prompt",)`: shared text prefix  | `("chosen",)`, `("rejected",)`: rest   |
| conversational, explicit      | `("prompt", i)`: message i         | `("chosen", i)`, `("rejected", i)`     |
| conversational, implicit      | `("prompt", i)`: shared message i  | `("chosen", i)`, `("rejected", i)`     |

With an implicit prompt the shared prefix (the common leading messages, or the common leading text cut at a word
boundary, as TRL's `extract_prompt` does) is exposed once, as a virtual `"prompt"` field, and written back into both
sides: an edit to the prompt can then never make chosen and rejected answer different questions.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PAIR_KEYS = ("prompt", "chosen", "rejected")

Path = tuple  # ("prompt",) | ("chosen", 3) ...: see the module docstring


class Augmenter(abc.ABC):
    r"""
    Produces label-preserving variants of preference pairs.

    Subclasses set `name` and `variants_per_pair` (the natural pool size per pair: how many variants one pair yields
    when `k` is large) and implement [`~Augmenter.augment`]. Calling the augmenter calls `augment`.

    Example:

    ```python
    >>> from mars_trl.augment import Augmenter
    >>> class Shout(Augmenter):
    ...     name, variants_per_pair = "shout", 1
    ...     def augment(self, pairs, k):
    ...         return [[{key: pair[key].upper() for key in ("chosen", "rejected")}][:k] for pair in pairs]
    >>> Shout()([{"chosen": "yes", "rejected": "no"}], k=4)
    [[{'chosen': 'YES', 'rejected': 'NO'}]]
    ```
    """

    name: str = "augmenter"
    variants_per_pair: int = 1

    @abc.abstractmethod
    def augment(self, pairs: list[dict], k: int) -> list[list[dict]]:
        """
        Return, for each pair, a list of at most `k` variants.

        Each variant is a dict with exactly the input's keys among `"prompt"`, `"chosen"` and `"rejected"` (extra
        keys such as `"id"` or `"margin"` are dropped: the caller re-attaches metadata), in the same format: strings
        stay strings, message lists keep their length, roles and order and only `"content"` strings change. Variants
        must preserve the label: the chosen response stays the better one.
        """

    def __call__(self, pairs: list[dict], k: int) -> list[list[dict]]:
        return self.augment(pairs, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, variants_per_pair={self.variants_per_pair})"


class CallableAugmenter(Augmenter):
    r"""
    Wraps a plain function `fn(pairs, k) -> list[list[dict]]` as an [`Augmenter`].

    Args:
        fn: the augmentation function; it gets the batch of pairs and `k` and returns one list of variants per pair.
        name: defaults to the function's `__name__`.
        variants_per_pair: the function's natural pool size per pair; defaults to `fn.variants_per_pair` when the
            function has that attribute, else 1 (a plain function does not say how many variants it can make).

    Example:

    ```python
    >>> from mars_trl.augment import CallableAugmenter
    >>> def swap_case(pairs, k):
    ...     return [[{"chosen": p["chosen"].swapcase(), "rejected": p["rejected"].swapcase()}][:k] for p in pairs]
    >>> augmenter = CallableAugmenter(swap_case)
    >>> augmenter.name
    'swap_case'
    >>> augmenter([{"chosen": "Yes", "rejected": "No"}], k=1)
    [[{'chosen': 'yES', 'rejected': 'nO'}]]
    ```
    """

    def __init__(
        self,
        fn: Callable[[list[dict], int], list[list[dict]]],
        name: str | None = None,
        variants_per_pair: int | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"CallableAugmenter needs a callable fn(pairs, k), got {type(fn).__name__}: {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self.variants_per_pair = int(variants_per_pair or getattr(fn, "variants_per_pair", 1))

    def augment(self, pairs: list[dict], k: int) -> list[list[dict]]:
        out = self.fn(pairs, k)
        # A wrong outer length would silently shift every variant onto the wrong source pair.
        if not isinstance(out, Sequence) or isinstance(out, (str, bytes)) or len(out) != len(pairs):
            got = f"{len(out)} items" if isinstance(out, Sequence) else type(out).__name__
            raise ValueError(
                f"augmenter {self.name!r} must return one list of variants per input pair ({len(pairs)}), got {got}"
            )
        return [list(variants) if isinstance(variants, (list, tuple)) else variants for variants in out]


def as_augmenter(obj: Any) -> Augmenter:
    r"""
    Return `obj` as an [`Augmenter`]: an augmenter instance is returned as is, a callable is wrapped in a
    [`CallableAugmenter`]; anything else raises `TypeError`.

    Example:

    ```python
    >>> from mars_trl.augment import PerturbationAugmenter, as_augmenter
    >>> as_augmenter(PerturbationAugmenter()).name
    'perturbation'
    >>> as_augmenter(lambda pairs, k: [[] for _ in pairs]).name
    '<lambda>'
    >>> as_augmenter("paraphrase")
    Traceback (most recent call last):
    ...
    TypeError: expected an Augmenter instance or a callable fn(pairs, k) -> list[list[dict]], got str: 'paraphrase'
    ```
    """
    if isinstance(obj, Augmenter):
        return obj
    if isinstance(obj, type):
        # Calling a class would construct an instance from (pairs, k) instead of augmenting.
        hint = f" (pass an instance, e.g. `{obj.__name__}()`)" if issubclass(obj, Augmenter) else ""
        raise TypeError(
            "expected an Augmenter instance or a callable fn(pairs, k) -> list[list[dict]], "
            f"got the class {obj.__name__}{hint}"
        )
    if callable(obj):
        return CallableAugmenter(obj)
    raise TypeError(
        "expected an Augmenter instance or a callable fn(pairs, k) -> list[list[dict]], "
        f"got {type(obj).__name__}: {obj!r}"[:300]
    )


# --------------------------------------------------------------------------------------------------------------------
# Format helpers


@dataclass(frozen=True)
class _Layout:
    keys: tuple[str, ...]  # the pair keys among PAIR_KEYS, in PAIR_KEYS order
    conversational: bool
    explicit: bool
    shared: int = 0  # implicit prompt: shared messages (conversational) or shared characters (standard)
    sep: str = ""  # standard implicit: the whitespace between the shared prefix and the responses


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value)


def _layout(pair: Mapping) -> _Layout:
    if not isinstance(pair, Mapping):
        raise TypeError(f"a preference pair must be a dict, got {type(pair).__name__}")
    missing = [key for key in ("chosen", "rejected") if key not in pair]
    if missing:
        raise ValueError(f"a preference pair needs 'chosen' and 'rejected', missing {missing}")
    keys = tuple(key for key in PAIR_KEYS if key in pair)
    explicit = "prompt" in pair
    chosen, rejected = pair["chosen"], pair["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if explicit and not isinstance(pair["prompt"], str):
            raise ValueError("standard pair: 'prompt' must be a string like 'chosen' and 'rejected'")
        if explicit:
            return _Layout(keys, False, True)
        shared, sep = _shared_text_prefix(chosen, rejected)
        return _Layout(keys, False, False, shared, sep)
    if _is_messages(chosen) and _is_messages(rejected):
        if explicit and not _is_messages(pair["prompt"]):
            raise ValueError("conversational pair: 'prompt' must be a list of messages like 'chosen' and 'rejected'")
        if explicit:
            return _Layout(keys, True, True)
        shared = 0
        # Keep at least one message on each side: the shared part is the prompt, the rest are the responses.
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        return _Layout(keys, True, False, shared)
    raise ValueError(
        "unsupported pair format: 'chosen' and 'rejected' must both be strings or both be lists of "
        f"{{'role', 'content'}} messages, got {type(chosen).__name__} and {type(rejected).__name__}"
    )


def _shared_text_prefix(chosen: str, rejected: str) -> tuple[int, str]:
    """Length of the shared prefix cut after whitespace (so no word is split), and that whitespace."""
    limit = min(len(chosen), len(rejected))
    common = 0
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    # Both sides keep a non-empty remainder, and the cut lands right after whitespace.
    cut = min(common, limit - 1)
    while cut > 0 and not chosen[cut - 1].isspace():
        cut -= 1
    if cut <= 0:
        return 0, ""
    prefix = chosen[:cut]
    stripped = prefix.rstrip()
    if not stripped.strip():
        return 0, ""
    return len(stripped), prefix[len(stripped) :]


def text_fields(pair: Mapping) -> list[tuple[Path, str]]:
    r"""
    List every text field of a pair that an augmenter may rewrite, as `(path, text)`.

    See the module docstring for the paths. Implicit prompts appear once, as virtual `"prompt"` fields; message
    contents that are not strings (e.g. multimodal parts) are not listed and stay unchanged.

    Example:

    ```python
    >>> from mars_trl.augment.base import text_fields
    >>> text_fields({"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 7})
    [(('prompt',), '2+2?'), (('chosen',), '4'), (('rejected',), '5')]
    >>> text_fields({"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: 5"})
    [(('prompt',), 'Q: 2+2? A:'), (('chosen',), '4'), (('rejected',), '5')]
    >>> user = {"role": "user", "content": "2+2?"}
    >>> text_fields({"chosen": [user, {"role": "assistant", "content": "4"}],
    ...              "rejected": [user, {"role": "assistant", "content": "5"}]})
    [(('prompt', 0), '2+2?'), (('chosen', 1), '4'), (('rejected', 1), '5')]
    ```
    """
    return [(path, text) for path, text, _ in _fields(pair, _layout(pair))]


def _fields(pair: Mapping, layout: _Layout) -> list[tuple[Path, str, str]]:
    """(path, text, role) for every text field; role is the message role, or "text" for standard rows."""
    out: list[tuple[Path, str, str]] = []
    if not layout.conversational:
        if layout.explicit:
            out.append((("prompt",), pair["prompt"], "text"))
        elif layout.shared:
            out.append((("prompt",), pair["chosen"][: layout.shared], "text"))
        start = layout.shared + len(layout.sep)
        out.append((("chosen",), pair["chosen"][start:], "text"))
        out.append((("rejected",), pair["rejected"][start:], "text"))
        return out

    def messages(key: str, part: str, lo: int, hi: int | None = None) -> None:
        for i, message in enumerate(pair[key][lo:hi], start=lo):
            if isinstance(message.get("content"), str):
                out.append(((part, i), message["content"], str(message["role"])))

    if layout.explicit:
        messages("prompt", "prompt", 0)
    else:
        messages("chosen", "prompt", 0, layout.shared)
    messages("chosen", "chosen", layout.shared)
    messages("rejected", "rejected", layout.shared)
    return out


def primary_fields(pair: Mapping) -> list[Path]:
    r"""
    The paths of the fields MARS rewrites: the last user turn of the prompt and the final assistant turn(s) of each
    response (for standard rows, the whole prompt and responses). System messages, earlier turns and other
    messages are context and stay as they are.

    Example:

    ```python
    >>> from mars_trl.augment.base import primary_fields
    >>> primary_fields({
    ...     "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    ...     "chosen": [{"role": "assistant", "content": "4"}],
    ...     "rejected": [{"role": "assistant", "content": "5"}],
    ... })
    [('prompt', 1), ('chosen', 0), ('rejected', 0)]
    ```
    """
    fields = _fields(pair, _layout(pair))
    out: list[Path] = []
    prompt = [(path, role) for path, _, role in fields if path[0] == "prompt"]
    users = [path for path, role in prompt if role in ("user", "text")]
    if users:
        out.append(users[-1])
    for side in ("chosen", "rejected"):
        side_fields = [(path, role) for path, _, role in fields if path[0] == side]
        final = []  # the trailing run of assistant messages: the answer being compared
        for path, role in reversed(side_fields):
            if role not in ("assistant", "text"):
                break
            final.insert(0, path)
        # Unusual roles in a response: the whole response is still what gets compared.
        out.extend(final or [path for path, _ in side_fields])
    return out


def with_texts(pair: Mapping, new_texts: Mapping[Path, str] | Sequence[str]) -> dict:
    r"""
    Rebuild `pair` with some texts replaced, keeping its format and structure.

    `new_texts` maps paths from [`text_fields`] to new strings (fields not mentioned keep their text), or is a
    sequence of strings aligned with `text_fields(pair)`. The result holds only the pair keys (`"prompt"`, `"chosen"`,
    `"rejected"`); messages are copied, only their `"content"` changes, and the input is never modified.

    Example:

    ```python
    >>> from mars_trl.augment.base import with_texts
    >>> with_texts({"chosen": "Q: hi A: hello", "rejected": "Q: hi A: go away", "id": 3}, {("prompt",): "Q: hey A:"})
    {'chosen': 'Q: hey A: hello', 'rejected': 'Q: hey A: go away'}
    ```
    """
    layout = _layout(pair)
    fields = _fields(pair, layout)
    if not isinstance(new_texts, Mapping):
        if len(new_texts) != len(fields):
            raise ValueError(f"expected {len(fields)} texts aligned with text_fields(pair), got {len(new_texts)}")
        new_texts = {path: text for (path, _, _), text in zip(fields, new_texts)}
    known = {path for path, _, _ in fields}
    unknown = [path for path in new_texts if path not in known]
    if unknown:
        raise KeyError(f"no text field at {unknown}; the pair's fields are {sorted(known, key=str)}")
    texts = {path: new_texts.get(path, text) for path, text, _ in fields}
    for path, text in texts.items():
        if not isinstance(text, str):
            raise TypeError(f"new text for {path} must be a string, got {type(text).__name__}")

    if not layout.conversational:
        out = {}
        prefix = texts[("prompt",)] + layout.sep if (not layout.explicit and layout.shared) else ""
        if layout.explicit:
            out["prompt"] = texts[("prompt",)]
        out["chosen"] = prefix + texts[("chosen",)]
        out["rejected"] = prefix + texts[("rejected",)]
        return out

    def rebuilt(key: str, part: str, offset: int = 0) -> list[dict]:
        messages = [dict(message) for message in pair[key]]
        for i, message in enumerate(messages):
            path = (part, i) if i >= offset else ("prompt", i)
            if path in texts:
                message["content"] = texts[path]
        return messages

    out = {}
    if layout.explicit:
        out["prompt"] = rebuilt("prompt", "prompt")
    out["chosen"] = rebuilt("chosen", "chosen", layout.shared)
    out["rejected"] = rebuilt("rejected", "rejected", layout.shared)
    return out


def pair_core(pair: Mapping) -> dict:
    """The pair restricted to its `"prompt"`, `"chosen"` and `"rejected"` keys (what a variant is compared to).

    >>> from mars_trl.augment.base import pair_core
    >>> pair_core({"chosen": "a", "rejected": "b", "margin": 0.3})
    {'chosen': 'a', 'rejected': 'b'}
    """
    return {key: pair[key] for key in PAIR_KEYS if key in pair}


def pair_key(pair: Mapping) -> str:
    """A canonical string for a pair's content, for hashing and de-duplication (stable across processes).

    >>> from mars_trl.augment.base import pair_key
    >>> pair_key({"rejected": "b", "chosen": "a", "id": 1}) == pair_key({"chosen": "a", "rejected": "b"})
    True
    """
    return json.dumps(pair_core(pair), sort_keys=True, default=repr)


def _response_blank(pair: Mapping, layout: _Layout, side: str) -> bool:
    texts = [text for path, text, _ in _fields(pair, layout) if path[0] == side]
    return not any(text.strip() for text in texts)


def _structure_problem(pair: Mapping, variant: Any) -> str | None:
    """Why `variant` does not have the structure of `pair`, or None."""
    if not isinstance(variant, Mapping):
        return f"expected a dict, got {type(variant).__name__}"
    expected = [key for key in PAIR_KEYS if key in pair]
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
                layout = _layout(variant)
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
