"""The margin-scoring pass: D_i = r(chosen_i) - r(rejected_i) for a set of tokenized pairs, with the current model.

No grad, eval mode, a progress bar, and sharded across processes: each process scores every `num_processes`-th batch
and all processes end with the same full vector. Batches hold single sequences sorted by their own length, not pairs:
a pair's two sides often differ in length, and padding both to the longer one made the pass 6-20% slower on HH-RLHF
pairs (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from trl.trainer.utils import pad

from ..names import TOKEN_COLUMNS


@dataclass
class ScoringResult:
    indices: np.ndarray
    #: `rewards[k] = (r(chosen), r(rejected))` of pair `indices[k]`.
    rewards: np.ndarray
    seconds: float

    @property
    def margins(self) -> np.ndarray:
        return self.rewards[:, 0] - self.rewards[:, 1]


def _side_lengths(indices: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.ndim == 1:  # one length per pair: both sides sort by it
        return np.repeat(lengths[indices], 2)
    return lengths[indices].reshape(-1)


def _batches(keys: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # Longest first: an out-of-memory shows up on the first batch, not after minutes of scoring.
    order = np.argsort(-keys, kind="stable")
    return [order[i : i + batch_size] for i in range(0, order.size, batch_size)]


def gather_indexed(accelerator, local_idx: np.ndarray, local_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every process's `(indices, values)` concatenated across processes (unchanged on a single process): used for the
    scoring pass and for the margins a training step saw."""
    if accelerator is None or accelerator.num_processes == 1:
        return local_idx, local_val
    device = accelerator.device
    idx = torch.as_tensor(local_idx, dtype=torch.int64, device=device)
    val = torch.as_tensor(local_val, dtype=torch.float64, device=device)
    idx = accelerator.pad_across_processes(idx, dim=0, pad_index=-1)
    val = accelerator.pad_across_processes(val, dim=0, pad_index=0)
    idx = accelerator.gather(idx).cpu().numpy()
    val = accelerator.gather(val).cpu().numpy()
    keep = idx >= 0
    return idx[keep], val[keep]


def _sequences(fetch, indices: np.ndarray, slots: np.ndarray) -> list[list[int]]:
    """Token ids of the sequences `slots` (slot 2k is pair `indices[k]`'s chosen side, 2k+1 its rejected side)."""
    pairs = np.unique(indices[slots // 2])
    chosen, rejected = fetch(pairs.tolist())
    where = {int(p): j for j, p in enumerate(pairs)}
    return [(chosen if s % 2 == 0 else rejected)[where[int(indices[s // 2])]] for s in slots]


@torch.no_grad()
def score_margins(
    model: torch.nn.Module,
    fetch: Callable[[list[int]], tuple[list, list]],
    indices: np.ndarray,
    lengths: np.ndarray,
    pad_token_id: int,
    batch_size: int,
    accelerator=None,
    show_progress: bool = True,
    description: str = "Scoring margins",
    device: torch.device | str | None = None,
    require_finite: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> ScoringResult:
    """
    Rewards and margins of the pairs `indices`, in their order and identical on every process. `fetch(indices)`
    returns their `(chosen_ids, rejected_ids)` token lists; `lengths` is `(num_pairs, 2)`, the token lengths of each
    pair's chosen and rejected sides (see `pair_lengths`), or one length per pair. A batch holds `2 * batch_size`
    sequences, the memory of `batch_size` pairs in a training batch. The forward runs under the accelerator's
    autocast (the training's precision), or under `torch.autocast` to `autocast_dtype` when one is given.

    Example:

    ```python
    >>> import numpy as np, torch
    >>> from datasets import Dataset
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from mars_trl.sampling.scoring import dataset_fetch, pair_lengths
    >>> from mars_trl.sampling.scoring import score_margins
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
    ...     num_attention_heads=1, intermediate_size=8, num_labels=1))
    >>> data = Dataset.from_dict({"chosen_ids": [[1, 2, 3], [4, 5]], "rejected_ids": [[1, 2], [6, 7, 8, 9]]})
    >>> result = score_margins(model, dataset_fetch(data), np.arange(2), pair_lengths(data), pad_token_id=0, batch_size=2,
    ...     show_progress=False)
    >>> result.margins.shape, result.rewards.shape
    ((2,), (2, 2))
    ```
    """
    start = time.perf_counter()
    indices = np.asarray(indices, dtype=np.int64)
    num_processes = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    batches = _batches(_side_lengths(indices, lengths), 2 * batch_size)
    mine = batches[rank::num_processes]
    # Every process runs the same number of forward passes: sharded models (ZeRO-3, FSDP) gather parameters
    # collectively in each forward, so a process that stopped early would hang the others.
    per_process = -(-len(batches) // num_processes)

    if device is None:
        device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    local_slots, local_val = [], []
    progress = tqdm(
        total=sum(len(b) for b in mine),
        desc=description,
        unit="seq",
        disable=not show_progress or rank != 0,
        leave=False,
    )
    try:
        for step in range(per_process):
            real = step < len(mine)
            slots = mine[step] if real else batches[0]
            ids = [torch.tensor(s, dtype=torch.long) for s in _sequences(fetch, indices, slots)]
            inputs = {
                "input_ids": pad(ids, padding_value=pad_token_id, padding_side="right").to(device),
                "attention_mask": pad([torch.ones_like(s) for s in ids], padding_value=0).to(device),
            }
            if autocast_dtype is not None:
                ctx = torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype)
            elif accelerator is not None:
                ctx = accelerator.autocast()
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                rewards = model(**inputs, use_cache=False).logits.squeeze(-1).float()
            if real:
                local_slots.append(slots)
                local_val.append(rewards.double().cpu().numpy())
                progress.update(len(slots))
    finally:
        progress.close()
        model.train(was_training)
    local_slots_arr = np.concatenate(local_slots) if local_slots else np.zeros(0, dtype=np.int64)
    local_val_arr = np.concatenate(local_val) if local_val else np.zeros(0, dtype=np.float64)
    all_slots, all_val = gather_indexed(accelerator, local_slots_arr, local_val_arr)
    flat = np.empty(2 * indices.size, dtype=np.float64)
    flat[all_slots] = all_val
    result = ScoringResult(indices=indices, rewards=flat.reshape(-1, 2), seconds=time.perf_counter() - start)
    margins = result.margins
    bad = np.flatnonzero(~np.isfinite(margins))
    if require_finite and bad.size:
        raise FloatingPointError(
            f"The reward model returned a non-finite margin ({margins[bad[0]]}) for training pair {int(indices[bad[0]])} "
            f"({bad.size} such pairs). Training has diverged or that pair's inputs are degenerate: lower the learning "
            "rate, turn off fp16, or resume from an earlier checkpoint. Nothing already saved was changed."
        )
    return result


def pair_lengths(dataset: Dataset) -> np.ndarray:
    """`(len(dataset), 2)` token lengths of the chosen and rejected sides of each tokenized pair (for `score_margins`,
    which batches sequences by their own length)."""
    table = dataset.with_format("arrow")[:]  # honours select/filter index mappings
    chosen = pc.list_value_length(table["chosen_ids"]).to_numpy(zero_copy_only=False)
    rejected = pc.list_value_length(table["rejected_ids"]).to_numpy(zero_copy_only=False)
    return np.stack([chosen, rejected], axis=1).astype(np.int64)


def dataset_fetch(dataset: Dataset):
    """A `fetch(indices) -> (chosen_ids, rejected_ids)` over a tokenized `datasets.Dataset`, for `score_margins`."""
    plain = dataset.with_format(None).select_columns(list(TOKEN_COLUMNS))

    def fetch(indices):
        rows = plain[list(indices)]
        return rows["chosen_ids"], rows["rejected_ids"]

    return fetch
