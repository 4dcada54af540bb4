"""Scoring held-out preference pairs with a reward model: [`prepare_pairs`] and [`score_pairs`]."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from datasets import Dataset

from ..data.preparation import prepare_as_reward_trainer
from ..names import ROW_COLUMN
from ..sampling.scoring import dataset_fetch, pair_lengths, score_margins
from .metrics import preference_metrics


@dataclass
class PairScores:
    """
    Rewards of the pairs that [`score_pairs`] kept, in the order of the input rows.

    `rows[k]` is the input row of pair `k` (pairs over `max_length` are dropped, exactly as in training, so `rows`
    can be shorter than the input); `subsets[k]` its subset label when the data had the subset column.
    """

    rewards_chosen: np.ndarray
    rewards_rejected: np.ndarray
    rows: np.ndarray
    num_input: int
    subsets: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def margins(self) -> np.ndarray:
        """D = r(chosen) - r(rejected) per kept pair."""
        return self.rewards_chosen - self.rewards_rejected

    @property
    def num_dropped(self) -> int:
        """Input pairs not scored: a side longer than `max_length` (RewardTrainer drops such pairs from training)."""
        return self.num_input - int(self.rows.size)

    def metrics(self, num_bins: int = 10) -> dict:
        """[`preference_metrics`] of these pairs (with reward AUC and a per-subset breakdown when available)."""
        out = preference_metrics(
            self.margins,
            subsets=self.subsets,
            rewards_chosen=self.rewards_chosen,
            rewards_rejected=self.rewards_rejected,
            num_bins=num_bins,
        )
        out["num_dropped"] = self.num_dropped
        return out


def prepare_pairs(
    dataset: Dataset | list[dict],
    tokenizer,
    max_length: int | None = None,
    dataset_num_proc: int | None = None,
    trainer=None,
    name: str = "evaluation",
) -> Dataset:
    """
    Tokenize preference data exactly as `MarsRewardTrainer` prepares it, keeping each pair's input row in the
    column `eval_row`.

    With `trainer` given, its own `_prepare_dataset` runs with its `processing_class` and `args` (so any subclass
    override applies). Otherwise the same steps run directly: `mars_trl.data.preparation.ensure_chat_template` (a plain
    template for conversational data on a tokenizer without one; note that it is set on `tokenizer`, as the trainer
    would), an empty eos for tokenizers without one, then TRL's `RewardTrainer._prepare_dataset` (eos appended to
    standard-format text, chat template applied to conversational data, prompt prepended, pairs with a side longer than
    `max_length` tokens removed).
    """
    if isinstance(dataset, list):
        dataset = Dataset.from_list(dataset)
    if ROW_COLUMN in dataset.column_names:
        raise ValueError(f"The dataset already has a column `{ROW_COLUMN}`, which score_pairs reserves: rename it.")
    if len(dataset) == 0:
        raise ValueError("Cannot score an empty dataset.")
    data = dataset.add_column(ROW_COLUMN, np.arange(len(dataset), dtype=np.int64))
    return prepare_as_reward_trainer(data, tokenizer, max_length, dataset_num_proc, name, trainer=trainer)


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module,
    tokenizer,
    dataset: Dataset | list[dict],
    batch_size: int = 32,
    max_length: int | None = 1024,
    subset_column: str | None = "subset",
    device: str | torch.device | None = None,
    show_progress: bool = True,
    description: str = "Scoring pairs",
    trainer=None,
) -> PairScores:
    """
    Rewards of both sides of every preference pair in `dataset` under `model` (a sequence-classification reward
    model with one label), prepared exactly as `MarsRewardTrainer` prepares training data (see [`prepare_pairs`]).

    The pass is MARS's margin-scoring pass ([`score_margins`]): eval mode, no gradient, batches of `2 * batch_size`
    sequences sorted by length (longest first, so an out-of-memory shows up at once; less padding), a progress bar.
    The model's training mode is restored afterwards. `max_length` is the training filter: pairs with a side longer than it are dropped and counted
    in `num_dropped` (pass the training run's value, or None to keep every pair). With `trainer` given, its own data
    preparation, `max_length` and tokenizer are used. `subset_column` (default `"subset"`), when present, labels each
    pair for the per-subset breakdown of [`PairScores.metrics`].
    """
    start = time.perf_counter()
    num_input = len(dataset)
    if trainer is not None:
        tokenizer = trainer.processing_class
    bars_were_on = not datasets.are_progress_bars_disabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        prepared = prepare_pairs(dataset, tokenizer, max_length=max_length, trainer=trainer, name=description)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    plain = prepared.with_format(None)
    rows = np.asarray(plain[ROW_COLUMN], dtype=np.int64)
    subsets = None
    if subset_column and subset_column in plain.column_names:
        subsets = np.asarray([str(s) for s in plain[subset_column]], dtype=object)
    n = len(plain)
    rewards = np.zeros((n, 2), dtype=np.float64)
    if n:
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        rewards = score_margins(
            model,
            dataset_fetch(plain),
            np.arange(n),
            pair_lengths(plain),
            pad_token_id=pad_id,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            description=description,
            require_finite=False,  # the metrics name non-finite rewards
        ).rewards
    return PairScores(
        rewards_chosen=rewards[:, 0],
        rewards_rejected=rewards[:, 1],
        rows=rows,
        num_input=num_input,
        subsets=subsets,
        seconds=time.perf_counter() - start,
    )
