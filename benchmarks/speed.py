"""Training speed of MarsRewardTrainer beside trl.RewardTrainer, side by side in one run, as ratios.

Every configuration trains the same backbone (the offline all-MiniLM-L6-v2 by default; its reward head initialised
from the same seed), on the same pairs (real HH-RLHF harmless-base pairs from ../shared/data, prompt cut to its last
user turn, pairs over `--max_length` tokens left out), with the same arguments and the same number of optimizer steps:

- `trl`: `trl.RewardTrainer` itself, on the pairs pre-tokenized exactly as MarsRewardTrainer prepares them (stock
  RewardTrainer cannot prepare text for MiniLM, which has no eos token; pre-tokenized input skips that step);
- `full` (a): MARS sampling only, every pair re-scored by a forward pass at each refresh (`margin_source="full"`);
- `full_bf16` (a): the same with `margin_scoring_precision="bf16"`: the scoring pass under bfloat16 autocast while
  training stays fp32;
- `online` (b): MARS sampling only, margins taken from the training steps (`margin_source="online"`);
- `augment` (c): sampling plus self-refinement rounds with the perturbation augmenter (budget = the labelled set per
  round, strategy `mars`), on the text of the same pairs; generation time is reported on its own.

The machine these figures come from is shared and noisy, so the configurations run interleaved (one of each per
repeat) and the table gives medians over repeats and ratios to `trl` measured in the same run. A second table
compares the margin-scoring pass with one training epoch over the same pairs: MARS's pass (batches of
2 x `--eval_batch_size` sequences sorted by length), the same pass with pairs kept together and sorted by their longer
side, the same pass in dataset order, and a forward pass in training-sized random batches.

```
python benchmarks/speed.py                      # 128 pairs, 3 epochs, 4 repeats: about 19 minutes on 2 idle cores
python benchmarks/speed.py --quick              # smoke run: 64 pairs, 1 repeat
python benchmarks/speed.py --data_path_only     # the DataLoader alone, per batch, beside RewardTrainer's: seconds
```
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

DATASET = "hh_rlhf_harmless_base_test"
CONFIGS = ("trl", "full", "full_bf16", "online", "augment")
LABELS = {
    "trl": "trl.RewardTrainer",
    "full": "(a) MARS sampling, full re-scoring",
    "full_bf16": "(a) the same, bf16 scoring pass",
    "online": "(b) MARS sampling, online margins",
    "augment": "(c) MARS + augmentation rounds",
}
TARGETS = {"full": 1.15, "full_bf16": 1.15, "online": 1.03}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--output_dir", default=common.DEFAULT_OUTPUT_DIR)
    parser.add_argument("--model", default=common.default_model(), help="local path (default: offline MiniLM)")
    parser.add_argument("--num_pairs", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eval_batch_size", type=int, default=32, help="also MARS's scoring batch size")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="64 pairs, 1 repeat (a smoke run, figures not stable)")
    parser.add_argument(
        "--data_path_only", action="store_true", help="only time the per-step data path (no model steps), then exit"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.num_pairs, args.repeats = 64, 1
    if "trl" not in args.configs:
        args.configs = ["trl", *args.configs]
    return args


def make_timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Wall-clock marks of the training loop. Registered before MarsCallback, so an epoch's mark comes before
        MARS's refresh: the refresh is the gap between `epoch_begin` and the epoch's first `step_begin`."""

        def __init__(self):
            self.events: list[tuple[str, float, int]] = []

        def _mark(self, name, state):
            self.events.append((name, time.perf_counter(), int(state.global_step)))

        def on_epoch_begin(self, args, state, control, **kwargs):
            self._mark("epoch_begin", state)

        def on_epoch_end(self, args, state, control, **kwargs):
            self._mark("epoch_end", state)

        def on_step_begin(self, args, state, control, **kwargs):
            self._mark("step_begin", state)

        def on_step_end(self, args, state, control, **kwargs):
            self._mark("step_end", state)

    return Timer()


def timings(timer) -> dict:
    """Per-step durations, per-epoch step time, and the time between an epoch's start and its first step."""
    steps, epochs, gaps = [], [], []
    epoch_steps, epoch_start, begin, first = 0.0, None, None, False
    for name, t, _ in timer.events:
        if name == "epoch_begin":
            epoch_start, epoch_steps, first = t, 0.0, True
        elif name == "step_begin":
            if first:
                gaps.append(t - epoch_start)
                first = False
            begin = t
        elif name == "step_end" and begin is not None:
            steps.append(t - begin)
            epoch_steps += t - begin
        elif name == "epoch_end":
            epochs.append({"wall": t - epoch_start, "steps": epoch_steps})
    return {"step_seconds": steps, "epochs": epochs, "epoch_start_gaps": gaps}


def load_data(args, tokenizer):
    import numpy as np

    from mars_trl.evaluation.scoring import prepare_pairs

    data = common.load_pairs(args.data_dir, DATASET, prompt_turns=1)
    rows = common.fitting_rows(data, tokenizer, args.max_length)
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(rows, size=min(args.num_pairs, rows.size), replace=False))
    text = data.select(chosen.tolist())
    tokenized = prepare_pairs(text, tokenizer, max_length=args.max_length).select_columns(
        ["chosen_ids", "rejected_ids"]
    )
    return text, tokenized


def training_arguments(args, output_dir: str) -> dict:
    """The RewardConfig / MarsConfig fields every configuration shares (CPU-friendly: no bf16, no checkpointing)."""
    import torch

    from mars_trl.config import quiet_run_arguments

    return quiet_run_arguments(
        output_dir,
        args.seed,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=5e-5,
        max_length=args.max_length,
        use_cpu=not torch.cuda.is_available(),
    )


def train_once(args, config: str, text, tokenized, workdir: str) -> dict:
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from mars_trl import MarsConfig, MarsRewardTrainer

    model, tokenizer = common.load_backbone(args.model, args.seed)
    base = training_arguments(args, os.path.join(workdir, config))
    timer = make_timer()
    if config == "trl":
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**base),
            train_dataset=tokenized,
            processing_class=tokenizer,
            callbacks=[timer],
        )
    else:
        mars = {"margin_source": "online" if config == "online" else "full"}
        if config == "full_bf16":
            mars["margin_scoring_precision"] = "bf16"
        if config == "augment":
            mars.update(augmenter="perturbation", augment_strategy="mars", augment_variants_per_pair=4)
        trainer = MarsRewardTrainer(
            model=model,
            args=MarsConfig(**base, **mars),
            train_dataset=text if config == "augment" else tokenized,
            processing_class=tokenizer,
            callbacks=[timer],
        )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True would print every log dict
    # Padded tokens per batch: MARS samples other pairs than RewardTrainer's shuffle, so its batches pad to other
    # lengths; this tells a step that costs more because it holds more tokens from one that does more work.
    padded_tokens: list[int] = []
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        padded_tokens.append(int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting_collator
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    logs = [e for e in trainer.state.log_history if any(k.startswith("mars/") for k in e)]
    out = {
        "config": config,
        "train_seconds": seconds,
        # CPU time of this process (all its threads): the work done, much less sensitive than wall time to other
        # tenants taking the cores (spin-waiting threads still inflate it somewhat under contention).
        "cpu_seconds": cpu_seconds,
        "steps": int(trainer.state.global_step),
        "seconds_per_step": seconds / max(trainer.state.global_step, 1),
        "scoring_seconds": sum(e.get("mars/scoring_seconds", 0.0) for e in logs),
        "pairs_scored": sum(e.get("mars/pairs_scored", 0.0) for e in logs),
        "generation_seconds": sum(e.get("mars/augment_generation_seconds", 0.0) for e in logs),
        "augment_seconds": sum(e.get("mars/augment_seconds", 0.0) for e in logs),
        "pool_size": len(trainer.pool) if getattr(trainer, "pool", None) is not None else len(tokenized),
        "refreshes": [
            {k.removeprefix("mars/"): v for k, v in e.items() if k.startswith("mars/") and isinstance(v, float)}
            for e in logs
        ],
        **timings(timer),
    }
    out["step_median"] = common.median(out["step_seconds"])
    out["padded_tokens_per_step"] = sum(padded_tokens) / max(len(padded_tokens), 1)
    # Time outside optimizer steps: trainer setup, epoch starts (MARS refreshes), the end of training.
    out["nonstep_seconds"] = seconds - sum(out["step_seconds"])
    if config == "full_bf16":
        out.update(bf16_margin_error(trainer))
    del trainer, model
    gc.collect()
    return out


def data_path(args, tokenized, repeats: int = 5) -> dict:
    """Milliseconds per batch of iterating the training DataLoader (sampler, dataset reads, collator; no model) of
    trl.RewardTrainer and of MarsRewardTrainer drawing from margin weights, interleaved, over the same pairs."""
    import numpy as np
    from trl import RewardConfig, RewardTrainer

    from mars_trl import MarsConfig, MarsRewardTrainer

    model, tokenizer = common.load_backbone(args.model, args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        base = training_arguments(args, workdir)
        trainers = {
            "trl": RewardTrainer(
                model=model, args=RewardConfig(**base), train_dataset=tokenized, processing_class=tokenizer
            ),
            "mars": MarsRewardTrainer(
                model=model, args=MarsConfig(**base), train_dataset=tokenized, processing_class=tokenizer
            ),
        }
        mars = trainers["mars"]
        mars.get_train_dataloader()  # creates the sampler; weights as after a refresh
        mars.margin_sampler.set_weights(np.random.default_rng(args.seed).random(len(tokenized)))
        times = {name: [] for name in trainers}
        for _ in range(repeats):
            for name, trainer in trainers.items():
                start, batches = time.perf_counter(), 0
                for _batch in trainer.get_train_dataloader():
                    batches += 1
                times[name].append((time.perf_counter() - start) / batches * 1000)
    del trainers, model, tokenizer
    gc.collect()
    return {name: {"ms_per_batch": common.median(v), "runs": v} for name, v in times.items()}


def bf16_margin_error(trainer) -> dict:
    """How far bf16 scoring moves the trained model's margins (after timing; two untimed passes)."""
    import numpy as np
    import torch

    from mars_trl.sampling.scoring import score_margins

    kwargs = dict(trainer.scoring_arguments(), show_progress=False)
    indices = np.arange(len(trainer.pool))
    passes = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        kwargs["autocast_dtype"] = dtype
        passes[name] = score_margins(
            fetch=trainer.pool.fetch, indices=indices, lengths=trainer.pool.lengths(), **kwargs
        ).margins
    error = np.abs(passes["bf16"] - passes["fp32"])
    return {
        "bf16_margin_max_error": float(error.max()),
        "bf16_margin_mean_error": float(error.mean()),
        "margin_std_fp32": float(passes["fp32"].std()),
        "bf16_sign_flips": int((np.sign(passes["bf16"]) != np.sign(passes["fp32"])).sum()),
    }


def scoring_versus_epoch(args, tokenized, tokenizer) -> dict:
    """One scoring pass over the pairs, four ways, on a fresh model (costs do not depend on the weights)."""
    import numpy as np
    import torch

    from mars_trl.sampling.scoring import dataset_fetch, pair_lengths, score_margins

    model, _ = common.load_backbone(args.model, args.seed)
    fetch, lengths = dataset_fetch(tokenized), pair_lengths(tokenized)
    n = len(tokenized)
    order = np.random.default_rng(args.seed).permutation(n)
    out = {}
    cases = {  # indices, sort keys, batch size, autocast dtype
        "sorted": (np.arange(n), lengths, args.eval_batch_size, None),  # what MARS runs: sequences sorted by length
        "sorted_bf16": (np.arange(n), lengths, args.eval_batch_size, torch.bfloat16),  # margin_scoring_precision
        "pair_sorted": (np.arange(n), lengths.max(axis=1), args.eval_batch_size, None),  # both at the longer's rank
        "dataset_order": (np.arange(n), np.zeros_like(lengths), args.eval_batch_size, None),  # stable sort: order
        "random_train_batches": (order, np.zeros_like(lengths), args.batch_size, None),
    }
    for name, (indices, keys, batch, dtype) in cases.items():
        result = score_margins(
            model,
            fetch,
            indices,
            keys,
            tokenizer.pad_token_id,
            batch,
            accelerator=None,
            show_progress=False,
            autocast_dtype=dtype,
        )
        out[name] = result.seconds
    del model
    gc.collect()
    return out


def summarise(args, runs: list[dict], scoring: list[dict]) -> tuple[dict, str]:
    by = {c: [r for r in runs if r["config"] == c] for c in args.configs}
    steps = by["trl"][0]["steps"]
    step_trl = common.median([r["step_median"] for r in by["trl"]])
    nonstep_trl = common.median([r["nonstep_seconds"] for r in by["trl"]])
    robust_trl = steps * step_trl + nonstep_trl
    best_trl = min(r["train_seconds"] for r in by["trl"])
    cpu_trl = common.median([r["cpu_seconds"] for r in by["trl"]])
    rows, summary = [], {}
    for config in args.configs:
        group = by[config]
        step_x = common.median([r["step_median"] for r in group])
        nonstep_x = common.median([r["nonstep_seconds"] for r in group])
        wall = [r["train_seconds"] / t["train_seconds"] for r, t in zip(group, by["trl"])]
        entry = {
            "steps": group[0]["steps"],
            "train_seconds": common.median([r["train_seconds"] for r in group]),
            "step_median": step_x,
            "nonstep_seconds": nonstep_x,
            # Robust to bursts of load from other tenants: steps x the median step time, plus the time outside steps.
            "ratio": (group[0]["steps"] * step_x + nonstep_x) / robust_trl,
            # What MARS adds outside the steps, on RewardTrainer's step time: MARS does no extra work inside a step
            # (its data path costs what RewardTrainer's does), so this separates its cost from step-time noise.
            "added_ratio": (group[0]["steps"] * step_trl + nonstep_x) / robust_trl,
            "wall_ratio": common.median(wall),
            # Contention only ever adds time: the least-disturbed repeat of each configuration.
            "best_ratio": min(r["train_seconds"] for r in group) / best_trl,
            "cpu_ratio": common.median([r["cpu_seconds"] for r in group]) / cpu_trl,
            "wall_ratio_per_repeat": wall,
            "step_ratio": step_x / step_trl,
            "tokens_ratio": common.median([r["padded_tokens_per_step"] for r in group])
            / common.median([r["padded_tokens_per_step"] for r in by["trl"]]),
            "scoring_seconds": common.median([r["scoring_seconds"] for r in group]),
            "generation_seconds": common.median([r["generation_seconds"] for r in group]),
            "augment_seconds": common.median([r["augment_seconds"] for r in group]),
            "pool_size": group[0]["pool_size"],
            "target": TARGETS.get(config),
        }
        summary[config] = entry
        target = entry["target"]
        verdict = "" if target is None else ("met" if entry["ratio"] <= target else "MISSED")
        rows.append(
            [
                LABELS[config],
                str(entry["steps"]),
                f"{entry['train_seconds']:.1f}",
                f"{step_x:.3f}",
                f"{entry['step_ratio']:.3f}x",
                f"{entry['tokens_ratio']:.3f}x",
                f"{nonstep_x:.1f}",
                f"{entry['ratio']:.3f}x",
                f"{entry['added_ratio']:.3f}x",
                f"{entry['best_ratio']:.3f}x",
                f"{entry['cpu_ratio']:.3f}x",
                f"{entry['wall_ratio']:.3f}x ({min(wall):.2f}-{max(wall):.2f})",
                f"{entry['scoring_seconds']:.1f}" if config != "trl" else "",
                f"{entry['generation_seconds']:.2f}" if config == "augment" else "",
                f"{entry['augment_seconds'] - entry['generation_seconds']:.2f}" if config == "augment" else "",
                f"<= {target:.2f}x {verdict}" if target else "",
            ]
        )
    headers = [
        "configuration",
        "steps",
        "train s",
        "median step s",
        "step ratio",
        "padded tokens per step, ratio",
        "outside-step s",
        "ratio",
        "outside-step time only, ratio",
        "best-repeat ratio",
        "CPU-time ratio",
        "wall ratio (range)",
        "scoring s",
        "generation s",
        "other round s",
        "target",
    ]
    table1 = common.markdown_table(headers, rows)

    steps_per_epoch = steps // args.epochs
    epoch = steps_per_epoch * step_trl
    epoch_best = steps_per_epoch * min(r["step_median"] for r in by["trl"])
    sc_summary = {"epoch_seconds_trl": epoch, "epoch_seconds_trl_best": epoch_best}
    sc_rows = [
        [
            "one training epoch, trl.RewardTrainer (steps x median step)",
            f"{epoch:.2f}",
            "1.000x",
            f"{epoch_best:.2f}",
            "1.000x",
        ]
    ]
    for name, label in (
        ("in_run", "MARS refresh inside run (a), per pass"),
        ("in_run_bf16", "MARS refresh inside run (a) with bf16 scoring, per pass"),
        ("sorted", "score_margins, sequences sorted by length (as MARS)"),
        ("sorted_bf16", "the same pass under bf16 autocast (margin_scoring_precision='bf16')"),
        ("pair_sorted", "same pass, pairs sorted by their longer side"),
        ("dataset_order", "same pass, dataset order"),
        ("random_train_batches", "forward only, random batches of the training size"),
    ):
        if name.startswith("in_run"):
            run = "full_bf16" if name == "in_run_bf16" else "full"
            values = [e["scoring_seconds"] for r in by.get(run, []) for e in r["refreshes"] if "scoring_seconds" in e]
            if not values:
                continue
        else:
            values = [s[name] for s in scoring]
        seconds, best = common.median(values), min(values) if values else float("nan")
        ratio, ratio_best = seconds / epoch, best / epoch_best
        sc_summary[name] = {
            "seconds": seconds,
            "ratio_to_epoch": ratio,
            "best_seconds": best,
            "best_ratio": ratio_best,
        }
        target = " (target <= 0.35x: " + ("met)" if ratio <= 0.35 else "MISSED)") if name.startswith("in_run") else ""
        sc_rows.append([label, f"{seconds:.2f}", f"{ratio:.3f}x{target}", f"{best:.2f}", f"{ratio_best:.3f}x"])
    table2 = common.markdown_table(
        ["pass over the same pairs", "seconds (median)", "ratio to epoch", "seconds (best)", "ratio (best)"], sc_rows
    )
    text = table1 + "\n\n" + table2
    trained = by.get("full_bf16", [])
    if trained:
        error = {
            k: common.median([r[k] for r in trained])
            for k in ("bf16_margin_max_error", "bf16_margin_mean_error", "margin_std_fp32", "bf16_sign_flips")
        }
        sc_summary["bf16_margins_after_training"] = error
        text += (
            f"\n\nbf16 against fp32 scoring of the trained model (run (a) bf16, all {trained[0]['pool_size']} pairs, "
            f"medians over repeats): max |error| {error['bf16_margin_max_error']:.4f}, mean "
            f"{error['bf16_margin_mean_error']:.4f}, margin std {error['margin_std_fp32']:.3f}, "
            f"{error['bf16_sign_flips']:.0f} pairs change sign."
        )
    return {"configs": summary, "scoring": sc_summary}, text


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.require_data(args.data_dir, [DATASET])
    model_path = common.require_model(args.model)
    args.model = model_path
    common.quiet()
    import torch

    from mars_trl.evaluation.scoring import prepare_pairs  # noqa: F401  (fail early if the package is broken)

    info = common.machine()
    _, tokenizer = common.load_backbone(model_path, args.seed)
    text, tokenized = load_data(args, tokenizer)
    print(
        f"speed: {len(tokenized)} pairs of {DATASET} (last user turn, <= {args.max_length} tokens), {args.epochs} "
        f"epochs, batch {args.batch_size}, {args.repeats} repeats, configs {args.configs}; torch threads "
        f"{torch.get_num_threads()}",
        flush=True,
    )
    path = data_path(args, tokenized)
    path_line = (
        f"Data path per batch (sampler, dataset reads, collator; no model; medians of 5): trl.RewardTrainer "
        f"{path['trl']['ms_per_batch']:.2f} ms, MarsRewardTrainer {path['mars']['ms_per_batch']:.2f} ms."
    )
    print(path_line, flush=True)
    if args.data_path_only:
        return {"data_path": path}
    runs, scoring = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(args.repeats):
            for config in args.configs:
                run = train_once(args, config, text, tokenized, workdir)
                run["repeat"] = repeat
                runs.append(run)
                print(
                    f"  repeat {repeat} {config:8s} {run['train_seconds']:7.1f} s  {run['seconds_per_step']:.3f} s/step"
                    f"  scoring {run['scoring_seconds']:.1f} s  generation {run['generation_seconds']:.2f} s",
                    flush=True,
                )
            scoring.append(scoring_versus_epoch(args, tokenized, tokenizer))
    summary, table = summarise(args, runs, scoring)
    settings = {k: v for k, v in vars(args).items()}
    header = (
        f"# Speed: MarsRewardTrainer beside trl.RewardTrainer\n\n{common.machine_line(info)}\n\n"
        f"Command: `{info['command']}`\n\n{len(tokenized)} pairs of {DATASET}, {args.epochs} epochs, batch "
        f"{args.batch_size}, max_length {args.max_length}, scoring batch {args.eval_batch_size}; medians over "
        f"{args.repeats} interleaved repeats; ratios to trl.RewardTrainer in the same run.\n"
    )
    table += "\n\n" + path_line
    summary["data_path"] = path
    markdown = header + "\n" + table + "\n"
    print("\n" + table)
    paths = common.write_results(
        args.output_dir, "speed", {"machine": info, "settings": settings, "summary": summary, "runs": runs}, markdown
    )
    print(f"\nWrote {paths[0]} and {paths[1]}")
    return summary


if __name__ == "__main__":
    main()
