"""The augmenter interface: [`Augmenter`], a function wrapped as one ([`CallableAugmenter`]), and [`as_augmenter`]."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

from ..deprecation import moved_name, warn_moved


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


def __getattr__(name: str):
    # The format helpers and variant validation lived here until the package was grouped by job; for one release.
    if name == "PAIR_KEYS":
        from ..names import TEXT_COLUMNS

        warn_moved(f"{__name__}.PAIR_KEYS", "mars_trl.names.TEXT_COLUMNS")
        return TEXT_COLUMNS
    homes = dict.fromkeys(
        ("Path", "text_fields", "primary_fields", "with_texts", "pair_core", "pair_key"), "mars_trl.data.fields"
    )
    homes["validate_variants"] = "mars_trl.augment.variants"
    return moved_name(__name__, name, homes)
