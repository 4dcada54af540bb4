"""`python -m mars_trl.cli.train` (the `mars-trl train` command) as a real subprocess on local files."""

import json
import os
import subprocess
import sys

from conftest import preference_rows

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def test_train_from_a_local_file_with_a_yaml_config(tmp_path, decoder_dir):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, **row}) for i, row in enumerate(preference_rows(40))) + "\n")
    config = tmp_path / "mars.yaml"
    config.write_text(
        "num_train_epochs: 2\nper_device_train_batch_size: 8\nlearning_rate: 0.001\nbf16: false\n"
        "gradient_checkpointing: false\nreport_to: none\nmax_length: 64\nuse_cpu: true\nsave_strategy: 'no'\n"
        "augmenter: perturbation\naugment_budget: 16\nmargin_tau: 0.5\n"
    )
    out = tmp_path / "rm"
    command = [
        sys.executable, "-m", "mars_trl.cli.train", "--config", str(config), "--model_name_or_path", decoder_dir,
        "--dataset_name", str(data), "--test_fraction", "0.25", "--eval_strategy", "epoch", "--output_dir", str(out),
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.safetensors", "tokenizer_config.json", "README.md", "mars_report.json", "mars_report.md",
                 "mars_augmented_pairs.jsonl", "mars_margins.png", "mars_allocation.png", "mars_accuracy.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "mars_report.json").read_text())
    assert report["labelled_pairs"] == 30 and report["rounds"][0]["augmenter"] == "perturbation"
    assert report["settings"]["augment_budget"] == 16
    assert "## Trained with MARS" in (out / "README.md").read_text()
