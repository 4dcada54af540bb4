"""MARS's own bookkeeping without any model: how its time and memory grow with the number of pairs.

Three parts, each size measured in a fresh process (so peak-memory figures are that size's alone):

1. **Per epoch** (1e4 .. 1e7 pairs): what a refresh and the epoch's sampling cost besides the scoring forward pass,
   with the library's own functions: writing a full margin refresh into the `MarginTable`, finding stale pairs
   (online source), the margin statistics that are logged, `sampling_weights`, `MarginAwareSampler.set_weights`, and
   drawing the epoch's index sequence (`list(sampler)`, what the DataLoader consumes, timed beside the stock
   `RandomSampler`, which every `Trainer` epoch pays anyway); plus the allocation of a round
   (`allocate("mars")` with budget = the labelled set). Time is the median over `--repeats`; memory is the
   tracemalloc peak above the inputs (NumPy reports its buffers to tracemalloc).
2. **Pool** (1e4 .. 1e6 augmented pairs of `--tokens` tokens a side): `PairPool.append` of the tokenized rows,
   `sources()`, `lengths()` (first call and cached), growing the margin table, reading a training batch, and
   checkpoint serialisation; memory is the Arrow buffer the pool keeps and the peak RSS of the process.
3. **Round** (1e3 .. 1e5 labelled pairs, budget = labelled pairs): the real `Refiner.run` with its model-dependent
   parts stubbed (a trivial augmenter, a tokenizer stub returning fixed token rows), so what is left is the round's
   own Python bookkeeping: allocation, the variant cache, per-pair draws, validation of variants, pool append.

```
python benchmarks/bookkeeping.py                         # about 5 minutes, peak ~6 GiB RAM at 1e7 / 1e6
python benchmarks/bookkeeping.py --sizes 1e4 1e5 1e6      # smaller
```
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TARGET_SECONDS_AT_1E7 = 1.0


def _rss_mib() -> float:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return common.median(times), result


# -- children -------------------------------------------------------------------------------------------------------
def child_epoch(n: int, repeats: int) -> dict:
    import tracemalloc

    import numpy as np
    from torch.utils.data import RandomSampler

    from mars_trl.sampling.allocation import allocate
    from mars_trl.sampling.margins import (
        MarginTable,
        bt_curvature,
        margin_statistics,
        sampling_statistics,
        sampling_weights,
    )
    from mars_trl.sampling.sampler import MarginAwareSampler

    rng = np.random.default_rng(0)
    margins = rng.normal(0.5, 2.0, n)
    table = MarginTable(n)
    sampler = MarginAwareSampler(num_pairs=n, seed=0)
    ops = {}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    ops["table_update"], _ = _timed(lambda: table.update(None, margins, 1), repeats)  # a full refresh
    ops["table_stale"], _ = _timed(lambda: table.stale(3, 2), repeats)
    def logged_statistics():
        # As MarsCallback.refresh: the curvature is computed once, for these figures and the weights' ones.
        curvature = bt_curvature(margins)
        margin_statistics(margins, curvature=curvature)
        return curvature

    ops["margin_statistics"], curvature = _timed(logged_statistics, repeats)
    ops["sampling_weights"], weights = _timed(lambda: sampling_weights(margins), repeats)
    ops["weight_statistics"], _ = _timed(lambda: sampling_statistics(margins, weights, curvature), repeats)
    ops["sampler_set_weights"], _ = _timed(lambda: sampler.set_weights(weights), repeats)
    sampler.set_epoch(1)
    ops["sampler_draw"], _ = _timed(lambda: sampler.indices(), repeats)
    epoch_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    # Iterating creates one Python int per index, which tracemalloc would trace one by one: timed untraced, beside
    # the stock RandomSampler (torch.randperm(n).tolist()), which pays the same per-index cost.
    ops["sampler_iter"], _ = _timed(lambda: list(sampler), repeats)
    ops["random_sampler_iter"], _ = _timed(lambda: list(RandomSampler(range(n))), repeats)
    tracemalloc.start()
    tracemalloc.reset_peak()
    ops["allocate_mars"], counts = _timed(lambda: allocate("mars", margins, n, seed=1), repeats)
    ops["allocate_uniform"], _ = _timed(lambda: allocate("uniform", margins, n, seed=1), repeats)
    alloc_peak = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert int(counts.sum()) == n
    # What a refresh computes, as MarsCallback.refresh does it (statistics of the margins, weights, their ESS).
    refresh = sum(ops[k] for k in ("table_update", "margin_statistics", "sampling_weights", "weight_statistics"))
    refresh += ops["sampler_set_weights"]
    # Handing out the epoch's indices replaces the stock RandomSampler's, which every Trainer epoch pays: only what
    # it costs beyond that is MARS's.
    own = refresh + max(0.0, ops["sampler_iter"] - ops["random_sampler_iter"])
    epoch = refresh + ops["sampler_iter"]
    return {
        "size": n,
        "ops": ops,
        "own_seconds": own,
        "own_with_round_seconds": own + ops["allocate_mars"],
        "epoch_seconds": epoch,
        "epoch_with_round_seconds": epoch + ops["allocate_mars"],
        "epoch_peak_bytes": epoch_peak,
        "allocation_peak_bytes": alloc_peak,
        "persistent_bytes": table.values.nbytes + table.epoch.nbytes + 2 * sampler.weights.nbytes,
    }


def _token_rows(n: int, tokens: int, seed: int = 0) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = rng.integers(1000, 30000, size=(n, tokens)).tolist()
    rejected = rng.integers(1000, 30000, size=(n, tokens)).tolist()
    return [
        {"chosen_ids": c, "rejected_ids": r, "mars_source": i % 1000, "mars_round": 1, "mars_variant": i // 1000}
        for i, (c, r) in enumerate(zip(chosen, rejected))
    ]


def _labelled(n: int, tokens: int):
    """A prepared labelled set of n pairs, built straight in Arrow (fast at any size)."""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset

    rng = np.random.default_rng(1)
    offsets = np.arange(0, (n + 1) * tokens, tokens, dtype=np.int32)
    cols = {
        name: pa.ListArray.from_arrays(offsets, pa.array(rng.integers(1000, 30000, n * tokens, dtype=np.int64)))
        for name in ("chosen_ids", "rejected_ids")
    }
    cols["mars_index"] = pa.array(np.arange(n, dtype=np.int64))
    return Dataset(pa.table(cols))


def child_pool(n: int, tokens: int, repeats: int) -> dict:
    import numpy as np
    import pyarrow as pa

    from mars_trl.refinement.pool import PairPool
    from mars_trl.sampling.margins import MarginTable

    labelled_n = 1000
    pool = PairPool(_labelled(labelled_n, tokens), "mars_index")
    table = MarginTable(labelled_n)
    rss0, arrow0 = _rss_mib(), pa.total_allocated_bytes()
    rows = _token_rows(n, tokens)
    rss_rows = _rss_mib()
    ops = {}
    start = time.perf_counter()
    new = pool.append(rows)
    ops["append"] = time.perf_counter() - start
    arrow_bytes = pa.total_allocated_bytes() - arrow0
    del rows
    ops["sources"], sources = _timed(pool.sources, repeats)
    start = time.perf_counter()
    pool.lengths()
    ops["lengths_first"] = time.perf_counter() - start
    ops["lengths_cached"], _ = _timed(pool.lengths, repeats)

    def grow():
        fresh = MarginTable(labelled_n)
        fresh.resize(len(pool))
        fresh.values[new.start : new.stop] = fresh.values[pool.sources()[-len(new) :]]

    ops["table_grow"], _ = _timed(grow, repeats)
    table.resize(len(pool))
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(pool), 16).tolist() for _ in range(50)]
    start = time.perf_counter()
    for batch in batches:
        pool.__getitems__(batch)
    ops["batch_read_16"] = (time.perf_counter() - start) / len(batches)
    start = time.perf_counter()
    blob = pool.to_jsonl()
    ops["checkpoint_to_jsonl"] = time.perf_counter() - start
    size = len(blob)
    del blob
    return {
        "size": n,
        "tokens": tokens,
        "ops": ops,
        "arrow_bytes": arrow_bytes,
        "rows_rss_mib": rss_rows - rss0,
        "peak_rss_mib": _peak_rss_mib() - rss0,
        "checkpoint_bytes": size,
        "sidecar_bytes": sources.nbytes + pool.lengths().nbytes + table.values.nbytes * 4,
    }


def child_round(n: int, tokens: int, repeats: int) -> dict:
    from types import SimpleNamespace

    import numpy as np
    from datasets import Dataset

    from mars_trl.config import MarsArguments
    from mars_trl.names import ROUND, SOURCE, VARIANT
    from mars_trl.refinement.pool import PairPool
    from mars_trl.refinement.rounds import Refiner

    seconds_augmenter = [0.0]

    def augmenter(pairs, k):
        start = time.perf_counter()
        out = [
            [{**p, "chosen": f"{p['chosen']} v{j}", "rejected": f"{p['rejected']} v{j}"} for j in range(k)]
            for p in pairs
        ]
        seconds_augmenter[0] += time.perf_counter() - start
        return out

    raw = Dataset.from_dict(
        {
            "prompt": [f"question {i}" for i in range(n)],
            "chosen": [f"good answer {i}" for i in range(n)],
            "rejected": [f"bad answer {i}" for i in range(n)],
        }
    )
    mars = MarsArguments(augment_budget=n, augment_variants_per_pair=4, augment_batch_size=256)
    trainer = SimpleNamespace(
        mars_args=mars,
        args=SimpleNamespace(seed=0),
        accelerator=SimpleNamespace(process_index=0, num_processes=1),
    )
    chosen = np.random.default_rng(0).integers(1000, 30000, size=(tokens,)).tolist()

    def tokenize(keys, round_id):  # the tokenizer stub: fixed rows, no Dataset.map
        return {
            key: {"chosen_ids": chosen, "rejected_ids": chosen, SOURCE: key[0], VARIANT: key[1], ROUND: round_id}
            for key in keys
        }

    margins = np.random.default_rng(2).normal(0.5, 2.0, n)
    times, bookkeeping = [], []
    rss0 = _rss_mib()
    for _ in range(repeats):
        pool = PairPool(_labelled(n, tokens), "mars_index")
        refiner = Refiner(trainer, augmenter, pool, raw, np.arange(n))
        refiner.tokenize = tokenize
        seconds_augmenter[0] = 0.0
        start = time.perf_counter()
        refiner.run(1, margins)
        refiner.run(2, margins)  # second round: variants come from the cache
        total = time.perf_counter() - start
        times.append(total)
        bookkeeping.append(total - seconds_augmenter[0])
        assert len(pool) == 3 * n
    return {
        "size": n,
        "round_pair_seconds": common.median(times),
        "bookkeeping_seconds": common.median(bookkeeping),
        "peak_rss_mib": _peak_rss_mib() - rss0,
    }


# -- parent ---------------------------------------------------------------------------------------------------------
def run_child(kind: str, size: int, tokens: int, repeats: int) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", kind, "--_size", str(size), "--tokens", str(tokens)]
    cmd += ["--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  {kind} at {size:.0e}: FAILED ({' / '.join(tail)})", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def _growth(results: list[dict], key) -> list[str]:
    """log-log slope of time against size between successive sizes: 1.0 is linear."""
    import math

    out = [""]
    for a, b in zip(results, results[1:]):
        ta, tb = key(a), key(b)
        out.append(f"{math.log(tb / ta) / math.log(b['size'] / a['size']):.2f}" if ta > 0 and tb > 0 else "")
    return out


def epoch_table(results: list[dict]) -> str:
    ops = [
        ("table_update", "margin table write"),
        ("table_stale", "stale pairs (online)"),
        ("margin_statistics", "margin statistics"),
        ("sampling_weights", "sampling_weights"),
        ("weight_statistics", "ESS / curvature stats"),
        ("sampler_set_weights", "sampler.set_weights"),
        ("sampler_draw", "sampler.indices()"),
        ("sampler_iter", "list(sampler): draw + Python ints"),
        ("random_sampler_iter", "(reference) list(RandomSampler)"),
        ("allocate_mars", "allocate('mars')"),
        ("allocate_uniform", "allocate('uniform')"),
    ]
    headers = ["operation", *[f"{r['size']:.0e} pairs" for r in results]]
    rows = [[label, *[_fmt_time(r["ops"][key]) for r in results]] for key, label in ops]
    rows.append(["epoch, sampling only, with the index hand-out", *[_fmt_time(r["epoch_seconds"]) for r in results]])
    rows.append(
        [
            "epoch + a round's allocation, with the hand-out",
            *[_fmt_time(r["epoch_with_round_seconds"]) for r in results],
        ]
    )
    rows.append(
        [
            "**MARS's own per epoch** (beyond the stock sampler)",
            *[f"**{_fmt_time(r['own_seconds'])}**" for r in results],
        ]
    )
    rows.append(
        ["**MARS's own + a round's allocation**", *[f"**{_fmt_time(r['own_with_round_seconds'])}**" for r in results]]
    )
    rows.append(["growth exponent (1 = linear)", *_growth(results, lambda r: r["epoch_with_round_seconds"])])
    rows.append(
        ["ns per pair per epoch", *[f"{r['epoch_with_round_seconds'] / r['size'] * 1e9:.0f}" for r in results]]
    )
    rows.append(["peak extra memory, epoch (MiB)", *[_mib(r["epoch_peak_bytes"]) for r in results]])
    rows.append(["peak extra memory, allocation (MiB)", *[_mib(r["allocation_peak_bytes"]) for r in results]])
    rows.append(["bytes per pair (epoch peak)", *[f"{r['epoch_peak_bytes'] / r['size']:.0f}" for r in results]])
    rows.append(["persistent: table + weights (MiB)", *[_mib(r["persistent_bytes"]) for r in results]])
    return common.markdown_table(headers, rows)


def pool_table(results: list[dict]) -> str:
    ops = [
        ("append", "PairPool.append (rows -> Arrow)"),
        ("sources", "pool.sources()"),
        ("lengths_first", "pool.lengths(), first call"),
        ("lengths_cached", "pool.lengths(), cached"),
        ("table_grow", "margin table grow + source margins"),
        ("batch_read_16", "read a batch of 16 (per step)"),
        ("checkpoint_to_jsonl", "checkpoint: pool.to_jsonl()"),
    ]
    headers = ["augmented pairs", *[f"{r['size']:.0e}" for r in results]]
    rows = [[label, *[_fmt_time(r["ops"][key]) for r in results]] for key, label in ops]
    rows.append(["growth exponent of append", *_growth(results, lambda r: r["ops"]["append"])])
    rows.append(["pool Arrow buffer (MiB)", *[_mib(r["arrow_bytes"]) for r in results]])
    rows.append(["rows as Python objects (MiB RSS)", *[f"{r['rows_rss_mib']:.0f}" for r in results]])
    rows.append(["peak RSS growth (MiB)", *[f"{r['peak_rss_mib']:.0f}" for r in results]])
    rows.append(["checkpoint pool file (MiB)", *[_mib(r["checkpoint_bytes"]) for r in results]])
    per_m = [1e6 / r["size"] for r in results]
    rows.append(
        ["**Arrow per 1M pairs (MiB)**", *[f"**{r['arrow_bytes'] * f / 2**20:.0f}**" for r, f in zip(results, per_m)]]
    )
    rows.append(
        ["**peak RSS per 1M pairs (MiB)**", *[f"**{r['peak_rss_mib'] * f:.0f}**" for r, f in zip(results, per_m)]]
    )
    return common.markdown_table(headers, rows)


def round_table(results: list[dict]) -> str:
    headers = ["labelled pairs (budget = same, 2 rounds)", *[f"{r['size']:.0e}" for r in results]]
    rows = [
        ["2 rounds, total (stub augmenter + tokenizer)", *[_fmt_time(r["round_pair_seconds"]) for r in results]],
        ["of which round bookkeeping", *[_fmt_time(r["bookkeeping_seconds"]) for r in results]],
        ["us per augmented pair", *[f"{r['bookkeeping_seconds'] / (2 * r['size']) * 1e6:.1f}" for r in results]],
        ["growth exponent", *_growth(results, lambda r: r["bookkeeping_seconds"])],
        ["peak RSS growth (MiB)", *[f"{r['peak_rss_mib']:.0f}" for r in results]],
    ]
    return common.markdown_table(headers, rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=common.DEFAULT_OUTPUT_DIR)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--pool_sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    parser.add_argument("--round_sizes", nargs="+", type=float, default=[1e3, 1e4, 1e5])
    parser.add_argument("--tokens", type=int, default=32, help="tokens per side of each augmented pair")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--_child", choices=["epoch", "pool", "round"], help=argparse.SUPPRESS)
    parser.add_argument("--_size", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        fn = {"epoch": child_epoch, "pool": child_pool, "round": child_round}[args._child]
        result = fn(args._size, args.repeats) if args._child == "epoch" else fn(args._size, args.tokens, args.repeats)
        print(json.dumps(result))
        return result
    info = common.machine()
    print(f"bookkeeping: sizes {args.sizes}, pool {args.pool_sizes}, round {args.round_sizes}", flush=True)
    epoch = [r for s in args.sizes if (r := run_child("epoch", int(s), args.tokens, args.repeats))]
    for r in epoch:
        print(
            f"  epoch {r['size']:.0e}: own {r['own_with_round_seconds']:.3f} s, with hand-out {r['epoch_with_round_seconds']:.3f} s",
            flush=True,
        )
    pool = [r for s in args.pool_sizes if (r := run_child("pool", int(s), args.tokens, 1))]
    for r in pool:
        print(f"  pool {r['size']:.0e}: append {r['ops']['append']:.2f} s", flush=True)
    rounds = [r for s in args.round_sizes if (r := run_child("round", int(s), args.tokens, 1))]
    for r in rounds:
        print(f"  round {r['size']:.0e}: {r['bookkeeping_seconds']:.2f} s", flush=True)
    tables = []
    verdict = ""
    at_max = [r for r in epoch if r["size"] >= 10**7]
    if at_max:
        r = at_max[-1]
        seconds = r["own_with_round_seconds"]
        verdict = (
            f"Target: under {TARGET_SECONDS_AT_1E7:.0f} s per epoch at 1e7 pairs: "
            f"{'met' if seconds < TARGET_SECONDS_AT_1E7 else 'MISSED'} for MARS's own bookkeeping ({seconds:.2f} s "
            f"with a round's allocation, {r['own_seconds']:.2f} s sampling only). Handing the epoch's indices to the "
            f"DataLoader as Python ints takes {r['ops']['sampler_iter']:.2f} s on top, against "
            f"{r['ops']['random_sampler_iter']:.2f} s for the stock RandomSampler that it replaces: with it, an epoch "
            f"costs {r['epoch_with_round_seconds']:.2f} s ({r['epoch_seconds']:.2f} s sampling only)."
        )
    if epoch:
        tables.append("## Per epoch (sampler, margins, allocation)\n\n" + epoch_table(epoch) + "\n\n" + verdict)
    if pool:
        tables.append(f"## Pool of augmented pairs ({args.tokens} tokens a side)\n\n" + pool_table(pool))
    if rounds:
        tables.append("## A refinement round's own bookkeeping\n\n" + round_table(rounds))
    body = "\n\n".join(tables)
    markdown = (
        f"# Bookkeeping: MARS without a model\n\n{common.machine_line(info)}\n\nCommand: `{info['command']}`\n\n"
        f"Medians over {args.repeats} repeats (per-epoch part); each size in a fresh process.\n\n{body}\n"
    )
    print("\n" + body)
    paths = common.write_results(
        args.output_dir,
        "bookkeeping",
        {"machine": info, "settings": vars(args), "epoch": epoch, "pool": pool, "round": rounds},
        markdown,
    )
    print(f"\nWrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
