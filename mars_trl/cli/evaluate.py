"""`mars-trl evaluate`: accuracy, ROC-AUC, reward AUC, margin SNR and calibration error of a reward model on preference
pairs, overall and per `subset`."""

from __future__ import annotations

import torch

from ..evaluation.metrics import format_metrics
from ..evaluation.scoring import score_pairs


def add_arguments(parser):
    """The arguments of `mars-trl evaluate` (added to `parser`, which is returned)."""
    parser.add_argument(
        "--model_name_or_path",
        required=True,
        help="A reward model: a full checkpoint, or a LoRA/QLoRA adapter folder written by trainer.save_model().",
    )
    parser.add_argument(
        "--dataset_name",
        required=True,
        help="Preference pairs in any TRL format: a local .json/.jsonl/.parquet/.csv file (optionally .gz) or "
        "folder, or a Hub dataset id.",
    )
    parser.add_argument("--dataset_config", default=None, help="Hub dataset config name.")
    parser.add_argument("--split", default="test", help="Hub dataset split (default: test; local files: all rows).")
    parser.add_argument("--subset", default=None, help="Keep only rows whose `subset` column equals this.")
    parser.add_argument("--max_samples", type=int, default=None, help="Score at most this many pairs (the first).")
    parser.add_argument(
        "--max_length",
        type=int,
        default=1024,
        help="Drop pairs with a side longer than this many tokens, as training does (default 1024, RewardConfig's); "
        "0 keeps every pair.",
    )
    parser.add_argument("--batch_size", type=int, default=32, help="Pairs per forward pass (default 32).")
    parser.add_argument("--num_bins", type=int, default=10, help="Bins of the calibration error (default 10).")
    parser.add_argument(
        "--load_in_4bit", action="store_true", help="QLoRA adapter: load its base in 4-bit (NF4) as in training."
    )
    parser.add_argument("--output", default=None, help="Also write every figure, per subset, to this JSON file.")
    return parser


def run(args) -> dict:
    """`mars-trl evaluate`: score the pairs, print the metrics table, optionally write JSON; returns the metrics."""
    import json
    import os

    from transformers import AutoTokenizer

    from ..data.loading import check_model_path, load_preference_dataset
    from ..names import METADATA_COLUMNS
    from ..peft.loading import load_reward_model
    from ..peft.quantization import qlora_config

    check_model_path(args.model_name_or_path)

    for name, minimum in (("batch_size", 1), ("num_bins", 1), ("max_length", 0)):
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {getattr(args, name)}.")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max_samples must be a positive number of pairs, got {args.max_samples}.")
    data = load_preference_dataset(
        args.dataset_name, args.dataset_config, split=args.split, subset=args.subset, drop_metadata=False
    )
    data = data.remove_columns([c for c in METADATA_COLUMNS if c in data.column_names])
    if args.max_samples is not None:
        data = data.select(range(min(args.max_samples, len(data))))
    model = load_reward_model(
        args.model_name_or_path, quantization_config=qlora_config() if args.load_in_4bit else None
    )
    if torch.cuda.is_available() and not args.load_in_4bit:
        model = model.to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    scores = score_pairs(model, tokenizer, data, batch_size=args.batch_size, max_length=args.max_length or None)
    if scores.rows.size == 0:
        raise ValueError(
            f"All {scores.num_input} pairs are longer than --max_length {args.max_length} tokens: raise --max_length."
        )
    metrics = scores.metrics(num_bins=args.num_bins)
    print(f"{args.model_name_or_path} on {args.dataset_name}: {scores.rows.size} pairs scored", end="")
    print(f", {scores.num_dropped} dropped (longer than --max_length {args.max_length})" if scores.num_dropped else "")
    print(format_metrics(metrics))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        report = {"model": args.model_name_or_path, "dataset": args.dataset_name, "metrics": metrics}
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2, allow_nan=True)
        print(f"Metrics written to {args.output}.")
    return metrics
