"""Which text of a pair the semantic layer compares and rewrites: the final response of each side (only the
assistant content of a conversational pair), the prompt, and a digest for caching."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ..data.fields import primary_fields, text_fields, with_texts


def _side_paths(pair: Mapping, side: str) -> list[tuple]:
    return [path for path in primary_fields(pair) if path[0] == side]


def response_text(pair: Mapping, side: str) -> str:
    r"""
    The text of a pair's `side` ("chosen" or "rejected") that is embedded: the whole response for standard rows (the
    part after the shared prompt for an implicit prompt), the content of the final assistant message(s) for
    conversational rows (joined by newlines when there are several); outer whitespace stripped.

    Example:

    ```python
    >>> from mars_trl.semantic import response_text
    >>> response_text({"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: 5"}, "rejected")
    '5'
    >>> user = {"role": "user", "content": "2+2?"}
    >>> response_text({"prompt": [user], "chosen": [{"role": "assistant", "content": "4"}],
    ...                "rejected": [{"role": "assistant", "content": "5"}]}, "chosen")
    '4'
    ```
    """
    texts = dict(text_fields(pair))
    return "\n".join(texts[path].strip() for path in _side_paths(pair, side))


def prompt_text(pair: Mapping) -> str:
    """The prompt shown to the rewriter: the last user message (conversational) or the prompt text; "" if none."""
    texts = dict(text_fields(pair))
    paths = [path for path in primary_fields(pair) if path[0] == "prompt"]
    return texts[paths[-1]] if paths else ""


def replace_response(pair: Mapping, side: str, text: str) -> dict:
    r"""
    `pair` with the response of `side` replaced by `text`, in the pair's own format. With several final assistant
    messages the last one is replaced. The original's leading and trailing whitespace is kept.

    Example:

    ```python
    >>> from mars_trl.semantic import replace_response
    >>> replace_response({"prompt": "2+2?", "chosen": " 4", "rejected": " 5"}, "rejected", "22")
    {'prompt': '2+2?', 'chosen': ' 4', 'rejected': ' 22'}
    ```
    """
    paths = _side_paths(pair, side)
    if not paths:
        raise ValueError(f"the pair has no {side} text to replace")
    old = dict(text_fields(pair))[paths[-1]]
    lead, trail = old[: len(old) - len(old.lstrip())], old[len(old.rstrip()) :]
    return with_texts(pair, {paths[-1]: lead + text.strip() + trail})


def last_response_text(pair: Mapping, side: str) -> str:
    paths = _side_paths(pair, side)
    return dict(text_fields(pair))[paths[-1]] if paths else ""


def text_digest(*texts: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()
