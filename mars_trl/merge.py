"""Merge a trained LoRA/QLoRA reward adapter (with its head) into a plain `AutoModelForSequenceClassification`.

The merged folder is an ordinary transformers checkpoint plus tokenizer: PPO/GRPO code (or any serving stack) loads
it with `AutoModelForSequenceClassification.from_pretrained(path)`, without PEFT installed, and gets the scores the
trained adapter gave.

```
python -m mars_trl.merge runs/rm-lora runs/rm-merged
python -m mars_trl.merge runs/rm-qlora runs/rm-merged --load_in_4bit --use_bnb_nested_quant   # QLoRA: see below
```

An adapter trained with QLoRA learned on top of the *4-bit* base weights. Pass the same quantization flags as in
training (`--load_in_4bit`, `--bnb_4bit_quant_type`, `--use_bnb_nested_quant`, `--dtype`): the base is then loaded in
4-bit, dequantized, and the adapter merged into exactly the weights it was trained against. Without them the adapter
is merged into the original full-precision weights (the usual practice; scores then differ from training by the
quantization error).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

import torch

from .peft_utils import (
    _quantization_kind,
    _skip_head_in_quantization,
    _unwrap,
    adapter_config_path,
    require_bitsandbytes,
)

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

_DTYPES = ("auto", "bfloat16", "float16", "float32")
_LEFTOVER_MARKERS = ("lora_", "base_layer", "modules_to_save", "original_module")


def _torch_dtype(dtype):
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be one of {_DTYPES} or a torch.dtype, got {dtype!r}.")
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
    target_dtype = _torch_dtype(dtype)
    kind = _quantization_kind(quantization_config)
    if quantization_config is not None and kind != "4-bit":
        raise ValueError("Only a 4-bit (QLoRA) `quantization_config` can be dequantized for merging.")
    load_kwargs = dict(num_labels=1, trust_remote_code=trust_remote_code, device_map=None)
    if kind is not None:
        require_bitsandbytes("Merging a QLoRA adapter against its 4-bit base")
        load_kwargs["quantization_config"] = _skip_head_in_quantization(quantization_config, base, trust_remote_code)
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
    config = _unwrap(merged).config
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


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the merge command's arguments to `parser` (for `mars-trl merge`); returns it."""
    parser.add_argument("adapter_dir", help="Folder written by trainer.save_model() after LoRA/QLoRA training.")
    parser.add_argument("output_dir", help="Where to write the merged AutoModelForSequenceClassification checkpoint.")
    parser.add_argument(
        "--base_model_name_or_path",
        default=None,
        help="Base checkpoint (default: the one recorded in the adapter's adapter_config.json).",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(_DTYPES),
        help="Dtype of the merged weights; with --load_in_4bit also the 4-bit compute dtype used in training.",
    )
    parser.add_argument(
        "--load_in_4bit",
        action="store_true",
        help="QLoRA adapter: load the base in 4-bit as in training and dequantize it before merging.",
    )
    parser.add_argument("--bnb_4bit_quant_type", default="nf4", choices=["nf4", "fp4"], help="As in training.")
    parser.add_argument(
        "--use_bnb_nested_quant", action="store_true", help="As in training (double quantization of the scales)."
    )
    parser.add_argument("--trust_remote_code", action="store_true", help="Allow custom model code from the Hub.")
    parser.add_argument("--no_tokenizer", action="store_true", help="Do not copy the tokenizer.")
    return parser


def run(args: argparse.Namespace) -> str:
    """Run the merge described by parsed `args` (see [`add_arguments`]); returns the output folder."""
    quantization_config = None
    if args.load_in_4bit:
        require_bitsandbytes("--load_in_4bit")
        from trl import ModelConfig, get_quantization_config

        quantization_config = get_quantization_config(
            ModelConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=args.bnb_4bit_quant_type,
                use_bnb_nested_quant=args.use_bnb_nested_quant,
                dtype="float32" if args.dtype == "auto" else args.dtype,
            )
        )
    output = merge_adapter(
        args.adapter_dir,
        args.output_dir,
        base_model=args.base_model_name_or_path,
        dtype=args.dtype,
        quantization_config=quantization_config,
        trust_remote_code=args.trust_remote_code,
        save_tokenizer=not args.no_tokenizer,
    )
    print(f"Merged {args.adapter_dir} into {output} (AutoModelForSequenceClassification, loads without PEFT).")
    return output


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m mars_trl.merge",
        description="Merge a LoRA/QLoRA reward adapter and its trained head into a plain "
        "AutoModelForSequenceClassification checkpoint.",
    )
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    main()
