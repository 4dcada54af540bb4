"""Fuzzing data preparation plus an augmentation round, and a many-round soak with bounded memory."""

import gc

import numpy as np
import psutil
import pytest
from conftest import cpu_args, make_decoder
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_refinement import suffix_augmenter
from transformers import TrainerCallback

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.data.validation import DataError
from mars_trl.names import RAW_ROW_COLUMN

texts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
    # Beyond max_length. Built by repetition: drawing 1,500 random characters per text exceeds hypothesis's
    # per-example data budget (FailedHealthCheck data_too_large since 6.170).
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=8, max_size=30).map(lambda s: s * 50),
    st.sampled_from(["", " ", "\n", "the cat likes the ball", "é😀中文", "\u200b"]),
)


@st.composite
def preference_rows(draw):
    conversational = draw(st.booleans())
    rows = []
    for _ in range(draw(st.integers(2, 8))):
        prompt, chosen, rejected = draw(texts), draw(texts), draw(texts)
        chosen, rejected = f"{chosen} correct", f"{rejected} wrong"  # in-vocabulary words: always differ
        if conversational:
            turns = [{"role": "user", "content": prompt}]
            if draw(st.booleans()):
                turns += [{"role": "assistant", "content": ""}, {"role": "user", "content": draw(texts)}]
            rows.append(
                {
                    "prompt": turns,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=preference_rows())
def test_random_rows_survive_preparation_and_a_round(tmp_path, decoder_tokenizer, rows):
    data = Dataset.from_list(rows)
    # Built before the trainer: constructing TrainingArguments resets accelerate's shared state, which the trainer's
    # Accelerator reads from (accelerate >= 1.16).
    probe_args = MarsConfig(**cpu_args(tmp_path, max_length=None))
    try:
        trainer = MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer),
            args=MarsConfig(
                **cpu_args(
                    tmp_path, max_length=96, augment_budget=len(rows), augment_variants_per_pair=3, disable_tqdm=True
                )
            ),
            train_dataset=data,
            processing_class=decoder_tokenizer,
            augmenter=suffix_augmenter,
        )
    except DataError as err:
        assert "max_length=96" in str(err)  # the only acceptable refusal: everything too long
        return
    # No pair is lost: each row is in the training set, or its tokenization is longer than max_length.
    kept = set(trainer.train_dataset[RAW_ROW_COLUMN])
    for index in set(range(len(rows))) - kept:
        alone = trainer._prepare_dataset(data.select([index]), decoder_tokenizer, probe_args, "probe")[0]
        assert max(len(alone["chosen_ids"]), len(alone["rejected_ids"])) > 96
    pool = trainer.pool
    before = [pool[i]["chosen_ids"] for i in range(pool.num_labelled)]
    new, report = trainer.refiner.run(epoch=1, labelled_margins=np.zeros(pool.num_labelled), budget=pool.num_labelled)
    assert len(pool) == pool.num_labelled + report["added"] == new.stop
    assert [pool[i]["chosen_ids"] for i in range(pool.num_labelled)] == before
    assert all(0 <= s < pool.num_labelled for s in pool.sources())


@pytest.mark.slow
def test_soak_many_rounds_memory_grows_only_with_the_pool(tmp_path, standard_rows, decoder_tokenizer):
    process = psutil.Process()
    readings = []

    class Measure(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            gc.collect()
            readings.append(process.memory_info().rss)

    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(
            **cpu_args(
                tmp_path,
                num_train_epochs=16,
                augment_budget=15 * 8,  # the run's budget: 8 per round
                augment_variants_per_pair=25,
                margin_source="online",
                logging_steps=50,
            )
        ),
        train_dataset=Dataset.from_list(standard_rows),
        processing_class=decoder_tokenizer,
        augmenter=suffix_augmenter,
        callbacks=[Measure()],
    )
    trainer.train()
    assert len(trainer.refiner.reports) == 15
    assert len(trainer.pool) == 48 + 15 * 8  # linear pool growth
    growth_mb = (readings[-1] - readings[3]) / 2**20
    assert growth_mb < 64, f"RSS grew {growth_mb:.1f} MB over 12 rounds for {12 * 8} pairs of a few dozen tokens"
