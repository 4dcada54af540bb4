"""The pool epoch: every pair of the grown pool once per epoch, and a schedule planned for that growth at step 0."""

import math

import numpy as np
import pytest
import torch
from conftest import cpu_args, make_decoder, to_format
from datasets import Dataset
from test_refinement import suffix_augmenter
from transformers import TrainerCallback, get_scheduler

from mars_trl import MarginAwareSampler, MarsArguments, MarsConfig, MarsRewardTrainer
from mars_trl.sampling.margins import sampling_weights
from mars_trl.sampling.schedule import plan_for_steps, plan_run


def test_plan_splits_the_run_budget_over_its_rounds():
    mars = MarsArguments(augment_budget=101)
    plan = plan_run(mars, num_labelled=40, num_epochs=4, augmenting=True)
    assert plan.round_epochs == (1, 2, 3)
    assert sorted(plan.round_budgets) == [33, 34, 34] and sum(plan.round_budgets) == 101
    assert plan.pool_sizes == (40, 40 + plan.round_budgets[0], 40 + sum(plan.round_budgets[:2]), 141)
    assert plan.epoch_samples == plan.pool_sizes  # no extra draws by default
    # The authors' default: 5x the labelled set over the run.
    assert sum(plan_run(MarsArguments(), 1000, 5, augmenting=True).round_budgets) == 5000
    # Extra margin-weighted draws come after the warm-up, on top of the pool.
    extra = plan_run(MarsArguments(augment_budget=40, margin_extra_fraction=0.25), 40, 3, augmenting=True)
    assert extra.epoch_samples == (40, 60 + 15, 80 + 20)
    # A fixed epoch keeps its length however the pool grows; rounds are capped by augment_max_rounds.
    fixed = plan_run(MarsArguments(epoch_length="fixed", augment_max_rounds=1, augment_budget=30), 40, 3, True)
    assert fixed.epoch_samples == (40, 40, 40) and fixed.round_epochs == (1,) and fixed.round_budgets == (30,)
    assert plan_run(MarsArguments(), 40, 3, augmenting=False).epoch_samples == (40, 40, 40)


def test_plan_for_steps_counts_the_epochs_a_step_budget_fills():
    mars = MarsArguments(augment_budget=120)
    steps_for = lambda samples: math.ceil(samples / 8)  # noqa: E731
    plan = plan_for_steps(mars, 40, True, steps_for, max_steps=20)
    # Without growth 20 steps would be 4 epochs of 5; with it, 3 epochs (5 + 12.5 + 20 steps) fill them, and
    # the budget is split over the 2 rounds those 3 epochs hold.
    assert plan.num_epochs == 3 and plan.round_budgets == (60, 60)
    assert sum(steps_for(n) for n in plan.epoch_samples[:-1]) < 20 <= sum(steps_for(n) for n in plan.epoch_samples)


def test_sampler_coverage_visits_every_pair_once_plus_weighted_extras():
    sampler = MarginAwareSampler(num_pairs=100, num_samples=100, seed=3)
    assert sorted(sampler.indices().tolist()) == list(range(100))
    weights = np.full(100, 1e-4)
    weights[7] = 1.0
    sampler.set_weights(weights)
    sampler.set_length(150)
    draws = sampler.indices()
    counts = np.bincount(draws, minlength=100)
    assert draws.size == 150 and counts.min() == 1  # nobody left out
    assert counts[7] > 40  # the extra 50 go (almost all) to the heavy pair
    assert sampler.seen_fraction(100) == 1.0
    fixed = MarginAwareSampler(num_pairs=100, seed=3, coverage=False)
    fixed.set_weights(weights)
    assert fixed.seen_fraction(100) < 0.1  # drawn with replacement, the heavy pair crowds out the rest
    assert np.unique(fixed.indices()).size < 10


class Recorder(TrainerCallback):
    """After MARS's own `on_epoch_begin`: each epoch's index sequence and pool size; the LR after every step."""

    def __init__(self, trainer):
        self.trainer, self.epochs, self.lrs = trainer, [], []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epochs.append((len(self.trainer.pool), self.trainer.margin_sampler.indices()))

    def on_step_end(self, args, state, control, **kwargs):
        self.lrs.append(self.trainer.lr_scheduler.get_last_lr()[0])


def _train(tmp_path, tokenizer, rows, **overrides):
    settings = dict(num_train_epochs=3, augment_budget=40, augment_variants_per_pair=5, learning_rate=1e-3)
    settings.update(overrides)
    trainer = MarsRewardTrainer(
        model=make_decoder(tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, **settings)),
        train_dataset=rows,
        processing_class=tokenizer,
        augmenter=suffix_augmenter,
    )
    recorder = Recorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    return trainer, recorder


def _planned_steps(samples, batch_size, accumulation):
    batches = math.ceil(samples / batch_size)
    return math.ceil(batches / accumulation)


def _reference_lrs(steps, **scheduler):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = get_scheduler(optimizer=optimizer, num_training_steps=steps, **scheduler)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize("accumulation", [1, 2])
def test_pool_epochs_cover_the_grown_pool_on_the_planned_schedule(
    tmp_path, accumulation, standard_rows, decoder_tokenizer
):
    rows = to_format(standard_rows[:45], False, True)  # ragged last batch
    trainer, recorder = _train(
        tmp_path,
        decoder_tokenizer,
        rows,
        gradient_accumulation_steps=accumulation,
        lr_scheduler_type="cosine",
        warmup_steps=3,
        margin_extra_fraction=0.2,
    )
    plan = trainer.run_plan
    assert plan.round_budgets == (20, 20) and len(trainer.pool) == 85
    # Each epoch: every pair of the pool as it stands exactly once, plus the planned extra draws.
    assert [size for size, _ in recorder.epochs] == [45, 65, 85] == list(plan.pool_sizes)
    for (size, draws), samples in zip(recorder.epochs, plan.epoch_samples):
        counts = np.bincount(draws, minlength=size)
        assert draws.size == samples and counts.size == size and counts.min() == 1
    assert plan.epoch_samples == (45, 65 + 13, 85 + 17)
    steps = sum(_planned_steps(n, 8, accumulation) for n in plan.epoch_samples)
    assert trainer.state.max_steps == trainer.state.global_step == steps
    # The LR at every step is the schedule planned at step 0 for the grown run (warm-up, cosine to zero).
    np.testing.assert_allclose(
        recorder.lrs, _reference_lrs(steps, name="cosine", num_warmup_steps=3), rtol=1e-6, atol=1e-12
    )
    assert trainer.state.epoch == pytest.approx(3.0)
    logs = [e for e in trainer.state.log_history if "mars/labelled_seen_fraction" in e]
    assert [e["mars/labelled_seen_fraction"] for e in logs] == [1.0, 1.0]
    assert [e["mars/epoch_samples"] for e in logs] == [78.0, 102.0]


def test_max_steps_with_a_growing_pool(tmp_path, standard_rows, decoder_tokenizer):
    rows = to_format(standard_rows[:40], False, True)
    trainer, recorder = _train(tmp_path, decoder_tokenizer, rows, max_steps=17, augment_budget=80)
    # 40 pairs = 5 steps; a 40-pair budget per round over the 2 rounds in reach: epochs of 5, 10, 15 steps.
    assert trainer.run_plan.round_budgets == (40, 40)
    assert trainer.state.global_step == trainer.state.max_steps == 17
    np.testing.assert_allclose(recorder.lrs, _reference_lrs(17, name="linear", num_warmup_steps=0), rtol=1e-6, atol=1e-12)


def test_fractional_epochs_cut_the_last_grown_epoch(tmp_path, standard_rows, decoder_tokenizer):
    rows = to_format(standard_rows[:40], False, True)
    trainer, _ = _train(tmp_path, decoder_tokenizer, rows, num_train_epochs=2.5)
    # Epochs of 40, 60, 80 pairs = 5, 8, 10 steps; half of the last one.
    assert trainer.run_plan.epoch_samples == (40, 60, 80)
    assert trainer.state.global_step == 5 + 8 + 5


def test_fixed_epoch_keeps_reward_trainer_steps_and_logs_its_coverage(tmp_path, standard_rows, decoder_tokenizer):
    rows = to_format(standard_rows[:40], False, True)
    trainer, recorder = _train(tmp_path, decoder_tokenizer, rows, epoch_length="fixed", margin_tau=20.0)
    assert trainer.state.global_step == 3 * 5
    assert all(draws.size == 40 for _, draws in recorder.epochs)
    seen = [e["mars/labelled_seen_fraction"] for e in trainer.state.log_history if "mars/labelled_seen_fraction" in e]
    assert len(seen) == 2 and all(0 < s < 1 for s in seen)  # drawn with replacement from a grown pool


def test_resume_inside_a_grown_epoch_continues_exactly(tmp_path, standard_rows, decoder_tokenizer):
    rows = to_format(standard_rows[:40], False, True)
    overrides = dict(save_strategy="steps", save_steps=9, margin_extra_fraction=0.25)
    full, _ = _train(tmp_path / "a", decoder_tokenizer, rows, **overrides)
    # Epochs of 40, 60 + 15, 80 + 20 pairs: 5, 10, 13 steps; step 9 lies inside the second epoch.
    assert full.run_plan.epoch_samples == (40, 75, 100) and full.state.global_step == 28
    resumed = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(
            **cpu_args(
                tmp_path / "b",
                num_train_epochs=3,
                augment_budget=40,
                augment_variants_per_pair=5,
                learning_rate=1e-3,
                **overrides,
            )
        ),
        train_dataset=rows,
        processing_class=decoder_tokenizer,
        augmenter=suffix_augmenter,
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-9"))

    def tail(trainer):
        return [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e and e["step"] > 9]

    assert [s for s, _ in tail(resumed)] == list(range(10, 29))
    assert [v for _, v in tail(resumed)] == pytest.approx([v for _, v in tail(full)], rel=1e-5)
    assert len(resumed.pool) == len(full.pool) == 80


def test_weights_and_allocation_rank_by_the_loss_margin(tmp_path, standard_rows, decoder_tokenizer):
    """With TRL's `margin` column m the loss is -log sigma(D - m): hardness is D - m, not D."""
    rows = to_format(standard_rows[:40], False, True).to_list()
    for i, row in enumerate(rows):
        row["margin"] = 3.0 if i % 2 else 0.0
    trainer, _ = _train(tmp_path, decoder_tokenizer, Dataset.from_list(rows), num_train_epochs=2, margin_tau=2.0)
    offsets = np.asarray(trainer.pool.loss_offsets())
    assert offsets.size == len(trainer.pool) == 80 and set(offsets[:40]) == {0.0, 3.0}
    np.testing.assert_allclose(offsets[40:], offsets[trainer.pool.sources()])  # variants keep their source's m
    hardness = trainer.margins - offsets
    expected = sampling_weights(hardness, tau=2.0, floor=0.1, standardize=trainer.mars_args.margin_standardize)
    np.testing.assert_allclose(trainer.margin_sampler.weights, expected, rtol=1e-9)
    counts = trainer.refiner.last_counts
    # A target margin of 3 the model has not reached makes those pairs the hard ones.
    assert counts[1::2].sum() > counts[0::2].sum()


def test_early_stopping_ends_a_grown_run_and_restores_the_best_checkpoint(tmp_path, standard_rows, decoder_tokenizer):
    # On small noisy sets the pool epoch's longer training can overfit (docs/benchmarks.md); transformers' early
    # stopping is the user's remedy, so it must work on a run whose schedule was planned for a growing pool.
    from transformers import EarlyStoppingCallback

    rows = to_format(standard_rows[:40], False, True)
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(
            **cpu_args(
                tmp_path,
                num_train_epochs=3,
                augment_budget=40,
                augment_variants_per_pair=5,
                eval_strategy="epoch",
                save_strategy="epoch",
                load_best_model_at_end=True,
                metric_for_best_model="eval_loss",
            )
        ),
        train_dataset=rows,
        eval_dataset=to_format(standard_rows[40:56], False, True),
        processing_class=decoder_tokenizer,
        augmenter=suffix_augmenter,
        # A threshold no change can pass: the first evaluation sets the best metric, the second (epoch 2) finds no
        # "improvement" and stops the run there.
        callbacks=[EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=1e9)],
    )
    trainer.train()
    plan = trainer.run_plan
    steps_two_epochs = sum(math.ceil(n / 8) for n in plan.epoch_samples[:2])
    assert trainer.state.global_step == steps_two_epochs < trainer.state.max_steps
    assert len(trainer.pool) == 60  # the one round that ran (epoch 2) is in the pool; the third never started
    # load_best_model_at_end restored the checkpoint of the evaluation with the lowest eval_loss.
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    best_step = min(evals, key=lambda e: e["eval_loss"])["step"]
    assert len(evals) == 2 and trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    from safetensors.torch import load_file

    live = trainer.model.state_dict()
    weights = {e["step"]: load_file(f"{tmp_path}/checkpoint-{e['step']}/model.safetensors") for e in evals}
    matches = {s: all(torch.equal(live[k].cpu(), v) for k, v in w.items() if k in live) for s, w in weights.items()}
    assert matches == {e["step"]: e["step"] == best_step for e in evals}
