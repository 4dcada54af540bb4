"""`mars-trl train`: TRL's reward script (`trl reward`) with MarsRewardTrainer, local files, and a MARS report.

Same flags as `trl reward` where they overlap (TrlParser over `ScriptArguments`, `MarsConfig` and `ModelConfig`, with
YAML `--config`), plus the few in `MarsScriptArguments`.

    mars-trl train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \\
        --output_dir Qwen2.5-0.5B-Reward-MARS --augmenter perturbation --num_train_epochs 3
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from ..config import MarsConfig


@dataclass
class MarsScriptArguments(ScriptArguments):
    """`trl.ScriptArguments` (dataset name, config, splits) plus local-file and sizing options."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, or a local .json/.jsonl/.parquet/.csv file (optionally .gz) or folder."},
    )
    dataset_subset: str | None = field(
        default=None, metadata={"help": "Keep only rows whose `subset` column equals this (files in ../shared/data)."}
    )
    eval_dataset_subset: str | None = field(
        default=None, metadata={"help": "Keep only evaluation rows whose `subset` column equals this."}
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A separate evaluation set (id or file). Default: `dataset_test_split` of the training data."
        },
    )
    test_fraction: float = field(
        default=0.0,
        metadata={"help": "Hold out this fraction of a single-split training file for evaluation (seeded)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many evaluation pairs."})
    merged_output_dir: str | None = field(
        default=None,
        metadata={
            "help": "With --use_peft: also merge the adapter and reward head into a plain checkpoint here, which loads "
            "with AutoModelForSequenceClassification and no PEFT (for PPO/GRPO). See `mars-trl merge`."
        },
    )
    write_report: bool = field(
        default=True,
        metadata={"help": "Write the MARS report (JSON, augmented pool, plots) to the output dir after training."},
    )


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    dataclass_types = (MarsScriptArguments, MarsConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("train", help="Train a reward model with MARS", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def _split(script_args: MarsScriptArguments, seed: int):
    from datasets import DatasetDict

    from ..data.loading import load_preference_dataset

    name = script_args.dataset_name
    if name is None:
        raise ValueError("Pass --dataset_name: a Hub dataset id or a local .json/.jsonl/.parquet file.")
    local = os.path.exists(name)
    if local:
        train = load_preference_dataset(name, subset=script_args.dataset_subset)
        evaluation = None
    else:
        dataset = load_preference_dataset(
            name, script_args.dataset_config, split=None, subset=None, drop_metadata=False
        )
        if isinstance(dataset, DatasetDict):
            train = dataset[script_args.dataset_train_split]
            evaluation = dataset.get(script_args.dataset_test_split)
        else:
            train, evaluation = dataset, None
    if script_args.eval_dataset_name:
        evaluation = load_preference_dataset(script_args.eval_dataset_name, subset=script_args.eval_dataset_subset)
    elif script_args.test_fraction > 0:
        parts = train.train_test_split(test_size=script_args.test_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    if evaluation is not None and script_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(script_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def resume_argument(value: str | None) -> str | bool | None:
    """`--resume_from_checkpoint`: a folder, or `true`/`latest` for the newest complete checkpoint in `output_dir`."""
    if value is None or os.path.isdir(value):
        return value
    if value.strip().lower() in ("true", "latest", "last"):
        return True
    if value.strip().lower() in ("false", "none", ""):
        return None
    raise FileNotFoundError(
        f"--resume_from_checkpoint {value}: no such checkpoint folder. Pass a checkpoint folder, or `latest` for the "
        "newest complete checkpoint in --output_dir."
    )


def main(script_args: MarsScriptArguments, training_args: MarsConfig, model_args: ModelConfig):
    """Train, save the model (and tokenizer) and, by default, the MARS report; returns the trainer."""
    from ..data.loading import check_model_path
    from ..trainer import MarsRewardTrainer

    if model_args.model_name_or_path is None:
        raise ValueError("Pass --model_name_or_path: a Hub model id or a local checkpoint folder.")
    check_model_path(model_args.model_name_or_path)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from ..peft.quantization import require_bitsandbytes

        require_bitsandbytes("--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit")
        if not model_args.use_peft:
            raise ValueError("A 4-bit/8-bit base trains through an adapter: add --use_peft (QLoRA).")
    if script_args.merged_output_dir and not model_args.use_peft:
        raise ValueError("--merged_output_dir merges a LoRA adapter: add --use_peft, or drop --merged_output_dir.")
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}
    train, evaluation = _split(script_args, training_args.seed)
    if evaluation is None and training_args.eval_strategy != "no":
        training_args.eval_strategy = "no"
    quantization_config = get_quantization_config(model_args)
    trainer = MarsRewardTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        quantization_config=quantization_config,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume_argument(training_args.resume_from_checkpoint))
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(training_args.output_dir)
        name = os.path.basename(os.path.normpath(training_args.output_dir))
        trainer.create_model_card(model_name=name, dataset_name=script_args.dataset_name)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if script_args.write_report and trainer.pool is not None:
        files = trainer.save_mars_report(training_args.output_dir)
        if files:
            trainer.accelerator.print(f"MARS report: {files['markdown']}")
    if script_args.merged_output_dir and trainer.is_world_process_zero():
        from ..peft.merge import merge_adapter

        merge_adapter(
            training_args.output_dir,
            script_args.merged_output_dir,
            quantization_config=quantization_config if model_args.load_in_4bit else None,
            dtype=model_args.dtype if model_args.dtype not in (None, "auto") else "float32",
            trust_remote_code=training_args.trust_remote_code,
        )
        trainer.accelerator.print(f"Merged reward model (no PEFT needed) saved to {script_args.merged_output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


def run_with_defaults(defaults: list[str], argv: list[str] | None = None):
    """Parse `defaults` then the user's flags (later flags win), and train. Used by the example scripts."""
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config(args=[*defaults, *(argv or [])])
    return main(script_args, training_args, model_args)


if __name__ == "__main__":
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
