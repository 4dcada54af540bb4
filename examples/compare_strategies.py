"""The paper's comparison in one command: plain RewardTrainer and the four MARS strategies, matched budgets.

Same model, data, seed, steps and budget for every run, so any difference is the strategy. Offline on CPU:

    python examples/compare_strategies.py --local_data ../shared/data --train_pairs 200 --test_pairs 200

Prints held-out pairwise accuracy and loss per strategy and writes them to --output_dir/comparison.json. For the
full protocol (several seeds, ROC-AUC, margin SNR, cross-dataset sets) see benchmarks/accuracy.py.
"""

import argparse
import json
import os
import tempfile

from datasets import load_dataset
from example_utils import offline_minilm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.data.loading import load_preference_dataset

STRATEGIES = ["plain", "none", "uniform", "west_of_n", "mars"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_data", help="../shared/data; without it the Hub's Anthropic/hh-rlhf is used")
    parser.add_argument("--model", default=None, help="model id or path (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--train_pairs", type=int, default=200)
    parser.add_argument("--test_pairs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget_ratio", type=float, default=1.0)
    parser.add_argument("--max_length", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="compare-strategies")
    args = parser.parse_args()

    if args.local_data:
        data = load_preference_dataset(os.path.join(args.local_data, "hh_rlhf_harmless_base_test", "pairs.jsonl"))
    else:
        data = load_dataset("Anthropic/hh-rlhf", split="train")
    data = data.shuffle(seed=args.seed).select(range(args.train_pairs + args.test_pairs))
    train, test = data.select(range(args.train_pairs)), data.select(range(args.train_pairs, len(data)))
    model_path = args.model or offline_minilm()

    results = {}
    for strategy in args.strategies:
        config = MarsConfig(
            output_dir=tempfile.mkdtemp(prefix=f"mars-{strategy}-"),
            num_train_epochs=args.epochs, learning_rate=5e-5, per_device_train_batch_size=16,
            per_device_eval_batch_size=32, max_length=args.max_length, seed=args.seed, bf16=False,
            gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=50,
            use_mars=strategy != "plain", augment_strategy="none" if strategy == "plain" else strategy,
            augmenter=None if strategy in ("plain", "none") else "perturbation",
            augment_budget_ratio=args.budget_ratio,
        )
        trainer = MarsRewardTrainer(
            model=AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1),
            args=config, train_dataset=train, eval_dataset=test,
            processing_class=AutoTokenizer.from_pretrained(model_path),
        )
        trainer.train()
        metrics = trainer.evaluate()
        results[strategy] = {"accuracy": metrics["eval_accuracy"], "loss": metrics["eval_loss"],
                             "pool": len(trainer.pool) if trainer.pool is not None else len(trainer.train_dataset)}
        print(f"{strategy:>10}: accuracy {results[strategy]['accuracy']:.3f}  loss {results[strategy]['loss']:.4f}  "
              f"pool {results[strategy]['pool']}", flush=True)

    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "comparison.json"), "w") as handle:
        json.dump({"settings": vars(args), "results": results}, handle, indent=1)
    print(f"\n{'strategy':>10} | accuracy | loss")
    for strategy, r in results.items():
        print(f"{strategy:>10} | {r['accuracy']:.3f}    | {r['loss']:.4f}")


if __name__ == "__main__":
    main()
