"""A generation model given as an id/path (loaded on first use) or already loaded: the paraphraser's and the rewriter's."""

from __future__ import annotations

import os
from typing import Any


class LazyModel:
    """
    A transformers generation model and its tokenizer, loaded on first access when given as an id or path, and moved
    to `device` once. With `causal_only=False` the class (seq2seq or causal LM) follows the checkpoint's config.

    Example:

    ```python
    >>> from mars_trl.lazy_model import LazyModel
    >>> lazy = LazyModel("humarin/chatgpt_paraphraser_on_T5_base")
    >>> lazy.name, lazy.loaded  # nothing is read until `.model` or `.tokenizer` is used
    ('humarin/chatgpt_paraphraser_on_T5_base', False)
    ```
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: Any = None,
        torch_dtype: Any = None,
        causal_only=False,
        gguf_file: str | None = None,
    ):
        is_path = isinstance(model, (str, os.PathLike))
        if not is_path and not hasattr(model, "generate"):
            raise TypeError(
                f"model must be a model id/path or an instantiated PreTrainedModel that can generate, got "
                f"{type(model).__name__}"
            )
        if not is_path and tokenizer is None:
            raise ValueError("a loaded model needs its `tokenizer`")
        self._model = None if is_path else model
        self.name = os.fspath(model) if is_path else getattr(model, "name_or_path", type(model).__name__)
        by_name = isinstance(tokenizer, (str, os.PathLike))
        self._tokenizer = None if by_name else tokenizer
        self._tokenizer_name = os.fspath(tokenizer) if by_name else None
        self.device = device
        self.torch_dtype = torch_dtype
        self.causal_only = causal_only
        # A GGUF checkpoint in the folder `model` (transformers dequantizes it on load; needs the `gguf` package).
        self.gguf_file = gguf_file
        if gguf_file is not None and is_path and os.path.isdir(self.name):
            if not os.path.isfile(os.path.join(self.name, gguf_file)):
                raise FileNotFoundError(f"gguf_file {gguf_file!r} is not in the folder {self.name}.")
        self._moved = False

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

            kwargs = {"dtype": self.torch_dtype} if self.torch_dtype is not None else {}
            if self.gguf_file is not None:
                kwargs["gguf_file"] = self.gguf_file
            if not self.causal_only:
                kwargs["config"] = AutoConfig.from_pretrained(self.name, **_gguf(self.gguf_file))
            seq2seq = getattr(kwargs.get("config"), "is_encoder_decoder", False)
            self._model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(
                self.name, **kwargs
            )
        if self.device is not None and not self._moved:
            self._model.to(self.device)
            self._moved = True
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            kwargs = _gguf(self.gguf_file) if self._tokenizer_name is None else {}
            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_name or self.name, **kwargs)
        return self._tokenizer


def _gguf(gguf_file: str | None) -> dict:
    return {} if gguf_file is None else {"gguf_file": gguf_file}


def model_device(model):
    """The device of a loaded model's weights (its `device` attribute, else its first parameter's)."""
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
