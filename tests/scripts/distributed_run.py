"""Run under `accelerate launch --num_processes 2`: train with MARS and dump what each rank saw to JSON."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import conftest  # noqa: E402
import torch  # noqa: E402

from mars_trl import MarsConfig, MarsRewardTrainer  # noqa: E402
from mars_trl.names import INDEX_COLUMN  # noqa: E402


class RecordingTrainer(MarsRewardTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # (epoch, pair indices) of every local micro-batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model.training and INDEX_COLUMN in inputs:
            self.seen.append([self.mars_callback.current_epoch, inputs[INDEX_COLUMN].tolist()])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main(output_dir: str, source: str) -> None:
    tokenizer = (
        conftest.decoder_tokenizer.__wrapped__()
        if hasattr(conftest.decoder_tokenizer, "__wrapped__")
        else (conftest.decoder_tokenizer._get_wrapped_function()())
    )
    data = conftest.to_format(conftest.preference_rows(40), conversational=False, explicit_prompt=True)
    args = MarsConfig(
        **conftest.cpu_args(
            output_dir,
            num_train_epochs=3,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=3,
            margin_source=source,
            use_cpu=True,
            # Augmentation rounds too: variants are generated on shards, gathered, and appended on every rank.
            augmenter="perturbation",
            augment_budget=32,  # the run's budget: 16 in each of the 2 rounds
        )
    )
    trainer = RecordingTrainer(
        model=conftest.make_decoder(tokenizer), args=args, train_dataset=data, processing_class=tokenizer
    )
    sequences = {}
    original_refresh = trainer.mars_callback.refresh

    def refresh(epoch):
        stats = original_refresh(epoch)
        sequences[epoch] = trainer.margin_sampler.indices().tolist()
        return stats

    trainer.mars_callback.refresh = refresh
    # The sequence slots (2 per scored pair) this rank itself scored in each scoring pass, before the gather.
    import mars_trl.sampling.scoring as scoring

    scored, gather = [], scoring.gather_indexed

    def recording_gather(accelerator, slots, values):
        scored.append(sorted(int(s) for s in slots))
        return gather(accelerator, slots, values)

    scoring.gather_indexed = recording_gather
    trainer.train()
    params = torch.cat([p.detach().flatten().double() for p in trainer.model.parameters()])
    rank = trainer.accelerator.process_index
    record = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "margins": trainer.margins.tolist(),
        "weights": trainer.margin_sampler.weights.tolist(),
        "sequences": sequences,
        "seen": trainer.seen,
        "params_sha": hashlib.sha256(params.numpy().tobytes()).hexdigest(),
        "refreshes": [e for e in trainer.state.log_history if "mars/pairs_scored" in e],
        "scored_slots": scored,
        "pool_size": len(trainer.pool),
        "pool_sha": hashlib.sha256(trainer.pool.to_jsonl()).hexdigest(),
    }
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
