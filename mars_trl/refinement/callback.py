"""`MarsCallback`: at the start of each refinement epoch, refresh margins, run an augmentation round, and re-weight
the sampler; logs every figure through the trainer's normal logging."""

from __future__ import annotations

import logging

import numpy as np
from transformers import TrainerCallback

from ..sampling.margins import (
    MarginTable,
    bt_curvature,
    margin_statistics,
    sampling_statistics,
    weights_with_nonfinite,
)
from ..sampling.scoring import score_margins
from .checkpoint import has_state
from .run_state import load_run_state

logger = logging.getLogger(__name__)


def epoch_index(state) -> int:
    """The 0-based epoch in progress: `state.epoch` is fractional mid-epoch (e.g. 1.5 on a mid-epoch resume)."""
    return int((state.epoch or 0.0) + 1e-6)


class MarsCallback(TrainerCallback):
    """
    Registered by [`MarsRewardTrainer`]; holds the margin table of the whole pool and drives sampler and refiner.

    At `on_epoch_begin` for epoch `e`: during the warm-up (`e < margin_warmup_epochs`) the sampler shuffles the
    labelled pairs; after it, every `margin_refresh_epochs` epochs:

    1. margins are refreshed: a full scoring pass over the pool, or only its stale pairs (`margin_source="online"`);
    2. if an augmenter is set, a round allocates the budget over the labelled pairs' margins and appends variants
       to the pool (they start with their source pair's margin until scored themselves);
    3. the sampler gets weights over the whole pool (or shuffles it, with `margin_sampling=False`);
    4. the figures are logged with keys prefixed `mars/` (TensorBoard, W&B and the rest receive them).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.mars = trainer.mars_args
        self.table: MarginTable | None = None
        #: The run's plan (set by the trainer at train start): each epoch's length and the rounds' budgets.
        self.plan = None
        self.last_refresh_epoch = -1
        self.current_epoch = 0
        # One entry per refresh, for the report and its plots: labelled margins and the round's allocation.
        self.history: list[dict] = []

    def reset(self) -> None:
        """Back to the state before any training: no margins, no refreshes, no history."""
        self.table, self.plan, self.last_refresh_epoch, self.current_epoch, self.history = None, None, -1, 0, []

    @property
    def sampler(self):
        return self.trainer.margin_sampler

    @property
    def pool(self):
        return self.trainer.pool

    @property
    def refiner(self):
        return self.trainer.refiner

    def margin_table(self) -> MarginTable:
        """The margin table of the whole pool (created, or grown with the pool, on first use)."""
        size = len(self.pool)
        if self.table is None:
            self.table = MarginTable(size)
        elif len(self.table) < size:
            self.table.resize(size)
        return self.table

    def rounds_left(self, epoch: int) -> bool:
        return self.refiner is not None and any(e >= epoch for e in self.plan.round_epochs)

    def hardness(self, table: MarginTable) -> np.ndarray:
        """What weights, allocation and curvature rank pairs by: D, or D - m where TRL's loss is -log sigma(D - m)
        (a `margin` column m), since that loss is most curved at D = m."""
        offsets = self.pool.loss_offsets()
        return table.values if offsets is None else table.values - offsets

    def refresh_due(self, epoch: int) -> bool:
        needs_margins = self.mars.margin_sampling or self.rounds_left(epoch)
        if not needs_margins or epoch < self.mars.margin_warmup_epochs:
            return False
        if epoch <= self.last_refresh_epoch:  # already refreshed for this epoch (a mid-epoch resume)
            return False
        return (epoch - self.mars.margin_warmup_epochs) % self.mars.margin_refresh_epochs == 0

    def score(self, indices: np.ndarray, epoch: int):
        result = score_margins(
            fetch=self.pool.fetch,
            indices=indices,
            lengths=self.pool.lengths(),
            description=f"MARS: scoring {indices.size} pairs (epoch {epoch})",
            require_finite=False,  # `check_finite` judges the whole table, full and online margins alike
            **self.trainer.scoring_arguments(),
        )
        table = self.margin_table()
        # `indices` is either every pair in order or sorted stale ones: all of them means the whole table.
        table.update(None if indices.size == len(table) else result.indices, result.margins, epoch)
        return result

    def refresh(self, epoch: int) -> dict[str, float]:
        table = self.margin_table()
        if self.mars.margin_source == "online":
            todo = table.stale(epoch, self.mars.margin_online_max_age_epochs)
        else:
            todo = np.arange(len(table))
        seconds = self.score(todo, epoch).seconds if todo.size else 0.0
        num_labelled = self.pool.num_labelled
        hardness = self.hardness(table)
        nonfinite = self.check_finite(table.values)
        finite = np.isfinite(hardness[:num_labelled])
        curvature = bt_curvature(hardness[:num_labelled][finite])
        stats = margin_statistics(table.values[:num_labelled][finite], curvature=curvature) if finite.any() else {}
        stats.update({"scoring_seconds": seconds, "pairs_scored": float(todo.size), "refresh_epoch": float(epoch)})
        stats["nonfinite_margins"] = float(nonfinite)

        entry = {"epoch": epoch, "margins": table.values[:num_labelled].astype(np.float32), "counts": None}
        self.history.append(entry)
        budget = self.plan.budget(epoch) if self.refiner is not None else 0
        if budget:
            new, report = self.refiner.run(epoch, hardness[:num_labelled].copy(), budget)
            entry["counts"] = self.refiner.last_counts
            table.resize(len(self.pool))
            # Until scored themselves, new pairs carry their source pair's margin (marked never measured).
            table.values[new.start : new.stop] = table.values[self.pool.sources()[-len(new) :]] if len(new) else 0.0
            stats.update({f"augment_{k}": float(v) for k, v in report.items() if isinstance(v, (int, float))})
            hardness = self.hardness(table)

        if self.mars.margin_sampling:
            weights = weights_with_nonfinite(
                hardness,
                tau=self.mars.margin_tau,
                mode=self.mars.margin_mode,
                floor=self.mars.margin_uniform_floor,
                standardize=self.mars.margin_standardize,
            )
            self.sampler.set_weights(weights)
            # Over the whole pool, without margin_statistics' quantiles (0.2 s at 1e7 pairs); the labelled pairs'
            # curvature serves while the pool holds nothing else.
            # Curvature over the pairs with a finite margin; the ESS over every weight.
            finite = np.isfinite(hardness)
            if finite.any():
                if len(table) != num_labelled or not finite.all():
                    curvature = bt_curvature(hardness[finite])
                sampled = sampling_statistics(hardness[finite], weights[finite] / weights[finite].sum(), curvature)
                stats["curvature_pool_uniform"] = sampled.pop("curvature_uniform")
                stats.update(sampled)
            stats["ess"] = float(1.0 / np.dot(weights, weights))
            stats["ess_fraction"] = stats["ess"] / weights.size
        else:
            self.sampler.set_pool_size(len(self.pool))
        stats["pool_size"] = float(len(self.pool))
        self.last_refresh_epoch = epoch
        return stats

    def check_finite(self, margins: np.ndarray) -> int:
        """How many pool pairs have a NaN/inf margin; warns (or, with `margin_nonfinite='raise'`, stops) if any."""
        bad = np.flatnonzero(~np.isfinite(margins))
        if bad.size and self.mars.margin_nonfinite == "raise":
            raise FloatingPointError(
                f"The reward model returned a non-finite margin ({margins[bad[0]]}) for training pair {int(bad[0])} "
                f"({bad.size} such pairs). Training has diverged or that pair's inputs are degenerate: lower the "
                "learning rate, turn off fp16, or resume from an earlier checkpoint. Nothing already saved was changed."
            )
        if bad.size:
            logger.warning(
                f"{bad.size} of {margins.size} training pairs have a non-finite margin (first: pair {int(bad[0])}, "
                f"{margins[bad[0]]}): the reward model overflows on them (e.g. float16 on CPU) or training diverged. "
                "They keep the uniform sampling weight and get no augmentation budget. Train in float32/bfloat16 or "
                "lower the learning rate; set `margin_nonfinite='raise'` to stop instead."
            )
        return int(bad.size)

    # -- Trainer events ------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.margin_table()
        if state.global_step == 0:  # once per run, in the run's first log entry
            self.trainer.log_mars_with_next_entry(
                {
                    "mars/labelled_dropped_max_length": float(self.trainer.dropped_max_length),
                    "mars/labelled_truncated_max_length": float(self.trainer.truncated_max_length.get("train", 0)),
                }
            )
        resume_dir = self.trainer.resume_checkpoint
        if resume_dir is not None:
            if has_state(resume_dir):
                load_run_state(resume_dir, self)
            else:
                logger.warning(
                    f"Checkpoint {resume_dir} has no MARS state (written by a run without MARS?): margins start "
                    "afresh and are re-scored at the next refresh."
                )

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = epoch_index(state)
        self.current_epoch = epoch
        self.sampler.set_epoch(epoch)
        if self.plan is not None and self.mars.epoch_length == "pool":
            self.sampler.set_length(self.plan.samples(epoch))
        if self.refresh_due(epoch):
            stats = self.refresh(epoch)
            stats["epoch_samples"] = float(self.sampler.num_samples)
            # Coverage beside ESS: the share of labelled pairs this epoch visits (expected, for a fixed epoch).
            stats["labelled_seen_fraction"] = self.sampler.seen_fraction(self.pool.num_labelled)
            self.trainer.log_mars({f"mars/{k}": v for k, v in stats.items()})

    def record_online(self, indices: np.ndarray, margins: np.ndarray) -> None:
        """Margins of the pairs a training step just saw (already gathered across processes)."""
        self.margin_table().update(indices, margins, self.current_epoch)
