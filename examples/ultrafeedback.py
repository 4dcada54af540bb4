"""MARS on UltraFeedback (binarized).

From the Hub:

    python examples/ultrafeedback.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --output_dir qwen-uf-mars

Offline, on ../shared/data's 1,200-pair sample (train_clean / eval_clean), CPU:

    python examples/ultrafeedback.py --local_data ../shared/data --max_train_samples 256 --output_dir uf-mars
"""

import sys

from example_utils import offline_minilm, pop_flag

from mars_trl.cli.train import run_with_defaults

COMMON = [
    "--num_train_epochs", "3", "--learning_rate", "2e-5", "--per_device_train_batch_size", "16",
    "--augmenter", "perturbation", "--report_to", "none", "--eval_strategy", "epoch",
]

if __name__ == "__main__":
    argv, local_data = pop_flag(sys.argv[1:], "--local_data")
    if local_data:
        path = f"{local_data}/ultrafeedback_binarized_1200/pairs.jsonl"
        defaults = [
            "--dataset_name", path, "--dataset_subset", "train_clean", "--eval_dataset_name", path,
            "--eval_dataset_subset", "eval_clean", "--model_name_or_path", offline_minilm(), "--max_length", "384",
            "--bf16", "false", "--gradient_checkpointing", "false", "--output_dir", "ultrafeedback-mars",
        ]
    else:
        defaults = [
            "--dataset_name", "trl-lib/ultrafeedback_binarized", "--dataset_test_split", "test",
            "--max_length", "1024", "--output_dir", "ultrafeedback-mars",
        ]
    run_with_defaults(COMMON + defaults, argv)
