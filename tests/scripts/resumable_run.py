"""A MARS run with augmentation rounds, for the kill-and-resume test: `resumable_run.py OUTPUT_DIR [resume]`.

With MARS_TEST_STEP_SLEEP set, each step sleeps that many seconds so the test can kill the process mid-epoch.
Writes OUTPUT_DIR/losses.json (step, loss) and OUTPUT_DIR/pool.jsonl at the end.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import conftest  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from mars_trl import MarsConfig, MarsRewardTrainer  # noqa: E402


def augmenter(pairs, k):
    words = ["clear", "kind", "polite", "helpful", "accurate"]
    return [[{key: f"{value} {words[j % 5]}" for key, value in pair.items()} for j in range(k)] for pair in pairs]


class Sleep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(float(os.environ.get("MARS_TEST_STEP_SLEEP", "0")))


def main(output_dir: str, resume: bool) -> None:
    tokenizer = conftest.decoder_tokenizer._get_wrapped_function()()
    data = conftest.to_format(conftest.preference_rows(48), conversational=False, explicit_prompt=True)
    args = MarsConfig(
        **conftest.cpu_args(
            output_dir,
            num_train_epochs=3,
            save_strategy="steps",
            save_steps=3,
            epoch_length="fixed",
            margin_num_samples=40,
            augment_budget=32,  # the run's budget: 16 in each of the 2 rounds
            augment_variants_per_pair=5,
            margin_source="online",
        )
    )
    trainer = MarsRewardTrainer(
        model=conftest.make_decoder(tokenizer, seed=5),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[Sleep()],
        augmenter=augmenter,
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    with open(os.path.join(output_dir, "losses.json"), "w") as handle:
        json.dump(losses, handle)
    with open(os.path.join(output_dir, "pool.jsonl"), "wb") as handle:
        handle.write(trainer.pool.to_jsonl())


if __name__ == "__main__":
    main(sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "resume")
