"""Merge a trained LoRA/QLoRA reward adapter (with its head) into a plain `AutoModelForSequenceClassification`.

The merged folder is an ordinary transformers checkpoint plus tokenizer: PPO/GRPO code (or any serving stack) loads
it with `AutoModelForSequenceClassification.from_pretrained(path)`, without PEFT installed, and gets the scores the
trained adapter gave.

```
mars-trl merge runs/rm-lora runs/rm-merged
mars-trl merge runs/rm-qlora runs/rm-merged --load_in_4bit --use_bnb_nested_quant   # QLoRA: see below
```

An adapter trained with QLoRA learned on top of the *4-bit* base weights. Pass the same quantization flags as in
training (`--load_in_4bit`, `--bnb_4bit_quant_type`, `--use_bnb_nested_quant`, `--dtype`): the base is then loaded in
4-bit, dequantized, and the adapter merged into exactly the weights it was trained against. Without them the adapter
is merged into the original full-precision weights (the usual practice; scores then differ from training by the
quantization error).
"""

from __future__ import annotations

import argparse

from ..peft.merge import DTYPES, merge_adapter
from ..peft.quantization import require_bitsandbytes


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
        choices=list(DTYPES),
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
        prog="python -m mars_trl.cli.merge",
        description="Merge a LoRA/QLoRA reward adapter and its trained head into a plain "
        "AutoModelForSequenceClassification checkpoint.",
    )
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    main()
