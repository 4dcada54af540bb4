"""[`merge_adapter`]: merge a LoRA/QLoRA adapter and its reward head into a plain checkpoint that loads without PEFT
(the `mars-trl merge` command, see `mars_trl.cli.merge`)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import torch

from .heads import unwrap_model
from .loading import adapter_config_path
from .quantization import quantization_kind, require_bitsandbytes, skip_head_in_quantization

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig


DTYPES = ("auto", "bfloat16", "float16", "float32")


_LEFTOVER_MARKERS = ("lora_", "base_layer", "modules_to_save", "original_module")


def torch_dtype(dtype):
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {DTYPES} or a torch.dtype, got {dtype!r}.")
    return getattr(torch, dtype)


def merge_adapter(
    adapter_dir: str,
    output_dir: str,
    *,
    base_model: str | None = None,
    dtype: torch.dtype | str = "float32",
    quantization_config: BitsAndBytesConfig | None = None,
    trust_remote_code: bool = False,
    save_tokenizer: bool = True,
    max_shard_size: str | int = "5GB",
) -> str:
    """
    Merge the adapter saved in `adapter_dir` (by `trainer.save_model()` after LoRA/QLoRA training) into its base
    model and write a plain `AutoModelForSequenceClassification` checkpoint, plus the tokenizer, to `output_dir`.

    Args:
        adapter_dir: folder with `adapter_config.json` and the adapter weights (the trained head included).
        output_dir: where the merged checkpoint goes.
        base_model: the base checkpoint; default: `base_model_name_or_path` recorded in the adapter config.
        dtype: dtype the merged weights are saved in (`"float32"`, `"bfloat16"`, `"float16"`, `"auto"`).
        quantization_config: for a QLoRA adapter, the 4-bit `BitsAndBytesConfig` used in training: the base is
            loaded with it and dequantized before merging, so the merged model scores what the trained one did.
        trust_remote_code: passed to `from_pretrained`.
        save_tokenizer: also save the tokenizer (from `adapter_dir`, else from the base).

    Returns:
        `output_dir`.
    """
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    adapter_dir, output_dir = str(adapter_dir), str(output_dir)
    config_path = adapter_config_path(adapter_dir)
    if config_path is None:
        raise ValueError(
            f"`{adapter_dir}` holds no PEFT adapter (no adapter_config.json): a full checkpoint needs no merging, "
            "load it with `AutoModelForSequenceClassification.from_pretrained`."
        )
    if os.path.abspath(adapter_dir) == os.path.abspath(output_dir):
        raise ValueError("`output_dir` must differ from `adapter_dir`: the merged model would overwrite the adapter.")
    with open(config_path) as f:
        adapter_config = json.load(f)
    base = base_model or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"The adapter in `{adapter_dir}` does not record its base model (it was trained on a model built in "
            "memory): pass `base_model=` / `--base_model_name_or_path`."
        )
    target_dtype = torch_dtype(dtype)
    kind = quantization_kind(quantization_config)
    if quantization_config is not None and kind != "4-bit":
        raise ValueError("Only a 4-bit (QLoRA) `quantization_config` can be dequantized for merging.")
    load_kwargs = dict(num_labels=1, trust_remote_code=trust_remote_code, device_map=None)
    if kind is not None:
        require_bitsandbytes("Merging a QLoRA adapter against its 4-bit base")
        load_kwargs["quantization_config"] = skip_head_in_quantization(quantization_config, base, trust_remote_code)
        compute = getattr(quantization_config, "bnb_4bit_compute_dtype", None)
        load_kwargs["dtype"] = compute if compute is not None else torch.float32
    else:  # merged in fp32 (or the checkpoint's own dtype for "auto"), cast afterwards
        load_kwargs["dtype"] = "auto" if target_dtype == "auto" else torch.float32
    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(base, **load_kwargs)
    if kind is not None:
        model = model.dequantize()
        for attribute in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
            if getattr(model, attribute, False):
                setattr(model, attribute, False)
        model.hf_quantizer = None
    model = PeftModel.from_pretrained(model, adapter_dir)
    merged = model.merge_and_unload()
    if target_dtype not in (None, "auto"):
        merged = merged.to(target_dtype)
    merged.eval()

    tokenizer = None
    if save_tokenizer:
        for source in (adapter_dir, base):
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
                break
            except Exception:
                continue
    config = unwrap_model(merged).config
    config.num_labels = 1
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    if tokenizer is not None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is not None:
            config.pad_token_id = pad_id
    config.architectures = [type(merged).__name__]
    leftovers = [name for name in merged.state_dict() if any(marker in name for marker in _LEFTOVER_MARKERS)]
    if leftovers:
        raise RuntimeError(f"Merging left PEFT weights in the model ({leftovers[:3]}...); nothing was written.")
    os.makedirs(output_dir, exist_ok=True)
    merged.save_pretrained(output_dir, max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return output_dir
