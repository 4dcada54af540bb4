"""`MarsCallback`: at the start of each refinement epoch, refresh margins and the sampler's weights, and log why."""

from __future__ import annotations

import logging

import numpy as np
from transformers import TrainerCallback

from .margins import MarginTable, margin_statistics, sampling_weights
from .scoring import pair_lengths, score_margins
from .state import has_state, load_state, save_state

logger = logging.getLogger(__name__)


def epoch_index(state) -> int:
    """The 0-based epoch in progress: `state.epoch` is fractional mid-epoch (e.g. 1.5 on a mid-epoch resume)."""
    return int((state.epoch or 0.0) + 1e-6)


class MarsCallback(TrainerCallback):
    """
    Registered by [`MarsRewardTrainer`]; it holds the margin table and drives the sampler.

    At `on_epoch_begin` for epoch `e`: during the warm-up (`e < margin_warmup_epochs`) the sampler shuffles; after it,
    every `margin_refresh_epochs` epochs the margins are refreshed (a full scoring pass, or only the stale pairs with
    `margin_source="online"`), turned into sampling weights, handed to the sampler, and logged through the trainer's
    normal logging (keys prefixed `mars/`, so TensorBoard and W&B receive them).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.mars = trainer.mars_args
        self.table: MarginTable | None = None
        self.last_refresh_epoch = -1
        self.current_epoch = 0
        self._lengths: np.ndarray | None = None

    # -- helpers -------------------------------------------------------------------------------------------------
    @property
    def sampler(self):
        return self.trainer._mars_sampler

    def _ensure_table(self) -> MarginTable:
        size = len(self.trainer.train_dataset)
        if self.table is None:
            self.table = MarginTable(size)
        elif len(self.table) < size:
            self.table.resize(size)
        return self.table

    def _lengths_for(self, dataset) -> np.ndarray:
        if self._lengths is None or self._lengths.size != len(dataset):
            self._lengths = pair_lengths(dataset)
        return self._lengths

    def refresh_due(self, epoch: int) -> bool:
        if not self.mars.margin_sampling or epoch < self.mars.margin_warmup_epochs:
            return False
        if epoch <= self.last_refresh_epoch:  # already refreshed for this epoch (a mid-epoch resume)
            return False
        return (epoch - self.mars.margin_warmup_epochs) % self.mars.margin_refresh_epochs == 0

    def score(self, indices: np.ndarray, epoch: int):
        trainer = self.trainer
        dataset = trainer.train_dataset
        batch_size = self.mars.margin_scoring_batch_size or trainer.args.per_device_eval_batch_size
        result = score_margins(
            trainer.scoring_model(),
            dataset,
            indices,
            self._lengths_for(dataset),
            pad_token_id=trainer.processing_class.pad_token_id,
            batch_size=batch_size,
            accelerator=trainer.accelerator,
            show_progress=not trainer.args.disable_tqdm,
            description=f"MARS: scoring {indices.size} pairs (epoch {epoch})",
        )
        self._ensure_table().update(result.indices, result.margins, epoch)
        return result

    def refresh(self, epoch: int) -> dict[str, float]:
        table = self._ensure_table()
        if self.mars.margin_source == "online":
            todo = table.stale(epoch, self.mars.margin_online_max_age_epochs)
        else:
            todo = np.arange(len(table))
        seconds = self.score(todo, epoch).seconds if todo.size else 0.0
        weights = sampling_weights(
            table.values,
            tau=self.mars.margin_tau,
            mode=self.mars.margin_mode,
            floor=self.mars.margin_uniform_floor,
            standardize=self.mars.margin_standardize,
        )
        self.sampler.set_weights(weights)
        self.last_refresh_epoch = epoch
        stats = margin_statistics(table.values, weights)
        stats.update({"scoring_seconds": seconds, "pairs_scored": float(todo.size), "refresh_epoch": float(epoch)})
        return stats

    # -- Trainer events ------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._ensure_table()
        resume_dir = self.trainer._mars_resume_dir
        if resume_dir is not None:
            if has_state(resume_dir):
                self.load(resume_dir)
            else:
                logger.warning(
                    f"Checkpoint {resume_dir} has no MARS state (written by a run without MARS?): margins start "
                    "afresh and are re-scored at the next refresh."
                )

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = epoch_index(state)
        self.current_epoch = epoch
        self.sampler.set_epoch(epoch)
        if self.refresh_due(epoch):
            stats = self.refresh(epoch)
            self.trainer.log_mars({f"mars/{k}": v for k, v in stats.items()})

    def record_online(self, indices: np.ndarray, margins: np.ndarray) -> None:
        """Margins of the pairs a training step just saw (already gathered across processes)."""
        self._ensure_table().update(indices, margins, self.current_epoch)

    # -- state ---------------------------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        table = self._ensure_table()
        sampler_state = self.sampler.state_dict()
        weights = sampler_state.pop("weights")
        scalars = {
            "last_refresh_epoch": self.last_refresh_epoch,
            "current_epoch": self.current_epoch,
            "sampler": sampler_state,
            "has_weights": weights is not None,
        }
        arrays = {"margins": table.values, "margin_epoch": table.epoch}
        if weights is not None:
            arrays["weights"] = weights
        save_state(directory, scalars, arrays)

    def load(self, directory: str) -> None:
        scalars, arrays = load_state(directory)
        table = self._ensure_table()
        table.load_state_dict({"values": arrays["margins"], "epoch": arrays["margin_epoch"]})
        self.last_refresh_epoch = int(scalars["last_refresh_epoch"])
        self.current_epoch = int(scalars["current_epoch"])
        sampler_state = dict(scalars["sampler"])
        sampler_state["weights"] = arrays["weights"] if scalars["has_weights"] else None
        self.sampler.load_state_dict(sampler_state)
