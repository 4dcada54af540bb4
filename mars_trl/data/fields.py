"""The text fields of a preference pair, in any of TRL's four formats (shared by augmenters and the semantic layer).

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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..names import TEXT_COLUMNS

Path = tuple  # ("prompt",) | ("chosen", 3) ...: see the module docstring


@dataclass(frozen=True)
class PairLayout:
    keys: tuple[str, ...]  # the pair keys among TEXT_COLUMNS, in TEXT_COLUMNS order
    conversational: bool
    explicit: bool
    shared: int = 0  # implicit prompt: shared messages (conversational) or shared characters (standard)
    sep: str = ""  # standard implicit: the whitespace between the shared prefix and the responses


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value)


def pair_layout(pair: Mapping) -> PairLayout:
    if not isinstance(pair, Mapping):
        raise TypeError(f"a preference pair must be a dict, got {type(pair).__name__}")
    missing = [key for key in ("chosen", "rejected") if key not in pair]
    if missing:
        raise ValueError(f"a preference pair needs 'chosen' and 'rejected', missing {missing}")
    keys = tuple(key for key in TEXT_COLUMNS if key in pair)
    explicit = "prompt" in pair
    chosen, rejected = pair["chosen"], pair["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if explicit and not isinstance(pair["prompt"], str):
            raise ValueError("standard pair: 'prompt' must be a string like 'chosen' and 'rejected'")
        if explicit:
            return PairLayout(keys, False, True)
        shared, sep = _shared_text_prefix(chosen, rejected)
        return PairLayout(keys, False, False, shared, sep)
    if _is_messages(chosen) and _is_messages(rejected):
        if explicit and not _is_messages(pair["prompt"]):
            raise ValueError("conversational pair: 'prompt' must be a list of messages like 'chosen' and 'rejected'")
        if explicit:
            return PairLayout(keys, True, True)
        shared = 0
        # Keep at least one message on each side: the shared part is the prompt, the rest are the responses.
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        return PairLayout(keys, True, False, shared)
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
    >>> from mars_trl.data.fields import text_fields
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
    return [(path, text) for path, text, _ in layout_fields(pair, pair_layout(pair))]


def layout_fields(pair: Mapping, layout: PairLayout) -> list[tuple[Path, str, str]]:
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
    >>> from mars_trl.data.fields import primary_fields
    >>> primary_fields({
    ...     "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    ...     "chosen": [{"role": "assistant", "content": "4"}],
    ...     "rejected": [{"role": "assistant", "content": "5"}],
    ... })
    [('prompt', 1), ('chosen', 0), ('rejected', 0)]
    ```
    """
    fields = layout_fields(pair, pair_layout(pair))
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
    >>> from mars_trl.data.fields import with_texts
    >>> with_texts({"chosen": "Q: hi A: hello", "rejected": "Q: hi A: go away", "id": 3}, {("prompt",): "Q: hey A:"})
    {'chosen': 'Q: hey A: hello', 'rejected': 'Q: hey A: go away'}
    ```
    """
    layout = pair_layout(pair)
    fields = layout_fields(pair, layout)
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

    >>> from mars_trl.data.fields import pair_core
    >>> pair_core({"chosen": "a", "rejected": "b", "margin": 0.3})
    {'chosen': 'a', 'rejected': 'b'}
    """
    return {key: pair[key] for key in TEXT_COLUMNS if key in pair}


def pair_key(pair: Mapping) -> str:
    """A canonical string for a pair's content, for hashing and de-duplication (stable across processes).

    >>> from mars_trl.data.fields import pair_key
    >>> pair_key({"rejected": "b", "chosen": "a", "id": 1}) == pair_key({"chosen": "a", "rejected": "b"})
    True
    """
    return json.dumps(pair_core(pair), sort_keys=True, default=repr)
