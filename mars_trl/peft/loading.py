"""Loading a trained reward model (full, LoRA or QLoRA adapter) for scoring, and adapter checks."""

from __future__ import annotations

import os

import torch
from torch import nn

from .heads import unwrap_model
from .quantization import (
    keep_4bit_weights_unpacked,
    prepare_kbit_model,
    quantization_kind,
    require_bitsandbytes,
    skip_head_in_quantization,
)


def adapter_config_path(model, revision: str | None = None) -> str | None:
    """The `adapter_config.json` of `model` when it names a saved PEFT adapter (local folder or cached Hub repo)."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = os.path.join(str(model), "adapter_config.json")
    if os.path.isfile(path):
        return path
    if os.path.isdir(str(model)):
        return None
    try:
        from transformers.utils.peft_utils import find_adapter_config_file

        return find_adapter_config_file(str(model), revision=revision)
    except Exception:
        return None


def has_adapter(model) -> bool:
    from accelerate.utils import is_peft_model

    if isinstance(model, nn.Module):
        return bool(is_peft_model(model) or getattr(model, "_hf_peft_config_loaded", False))
    return adapter_config_path(model) is not None


def check_adapter_conflict(model, peft_config, revision: str | None = None) -> None:
    """Raise a `ValueError` when `model` already carries an adapter and `peft_config` would stack another on it."""
    if peft_config is None or not has_adapter(model):
        return
    what = (
        f"`{model}` is a saved PEFT adapter"
        if isinstance(model, (str, os.PathLike))
        else (f"the model ({type(model).__name__}) already has a PEFT adapter")
    )
    name = model if isinstance(model, (str, os.PathLike)) else "<adapter dir>"
    raise ValueError(
        f"Both an adapter and a `peft_config` were given: {what}, and a second adapter would be stacked on it. "
        f"Either continue training that adapter: drop `peft_config` and pass "
        f"`model=mars_trl.peft.loading.load_reward_model('{name}', is_trainable=True)`; or start a new adapter on "
        f"the merged model: `mars-trl merge {name} merged/` (or `mars_trl.peft.merge.merge_adapter`), then "
        "`model='merged/'` with your `peft_config`."
    )


def _tokenizer_pad_id(path: str, trust_remote_code: bool) -> int | None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception:
        return None
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def load_reward_model(
    path: str,
    *,
    base_model: str | None = None,
    quantization_config=None,
    dtype: torch.dtype | str = torch.float32,
    is_trainable: bool = False,
    device_map=None,
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """
    Load a reward model for scoring (or, with `is_trainable=True`, to continue training its adapter).

    A folder written by `trainer.save_model()` after PEFT training holds the adapter and the trained head; it is put
    back on its base model (`base_model`, default: the one recorded in `adapter_config.json`), loaded with
    `num_labels=1` and, for a QLoRA adapter, the same `quantization_config` as in training. A full checkpoint (e.g. a
    merged one) is loaded as an `AutoModelForSequenceClassification`. The pad token id of the tokenizer saved next to
    the weights is set on the config, so batched scoring works.
    """
    import json

    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if quantization_kind(quantization_config):
        require_bitsandbytes()
    kwargs = dict(
        num_labels=1,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
        revision=revision,
    )
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    adapter_config = adapter_config_path(path, revision=revision)
    if adapter_config is None:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    else:
        from peft import PeftModel

        with open(adapter_config) as f:
            recorded = json.load(f).get("base_model_name_or_path")
        base = base_model or recorded
        if not base:
            raise ValueError(
                f"The adapter in `{path}` does not record its base model (it was trained on a model object built in "
                "memory): pass `base_model=` (the base checkpoint's path or Hub id)."
            )
        base_kwargs = dict(kwargs, revision=None)
        if "quantization_config" in base_kwargs:  # the head unquantized, as in training
            base_kwargs["quantization_config"] = skip_head_in_quantization(
                quantization_config, base, trust_remote_code
            )
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(base, **base_kwargs)
        if quantization_config is not None and is_trainable:
            model = prepare_kbit_model(model)
        model = PeftModel.from_pretrained(model, path, is_trainable=is_trainable, revision=revision)
    keep_4bit_weights_unpacked(model)
    pad_id = _tokenizer_pad_id(path, trust_remote_code)
    if pad_id is not None:
        unwrap_model(model).config.pad_token_id = pad_id
    if not is_trainable:
        model.eval()
    return model
