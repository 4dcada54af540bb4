"""The margin-scoring pass: D_i = r(chosen_i) - r(rejected_i) for a set of tokenized pairs, with the current model.

No grad, eval mode, length-sorted batches (less padding), a progress bar, and sharded across processes: each process
scores every `num_processes`-th batch and all processes end with the same full vector.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from trl.trainer.reward_trainer import DataCollatorForPreference


@dataclass
class ScoringResult:
    indices: np.ndarray
    margins: np.ndarray
    seconds: float


def _batches(indices: np.ndarray, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # Longest first: an out-of-memory shows up on the first batch, not after minutes of scoring.
    order = indices[np.argsort(-lengths[indices], kind="stable")]
    return [order[i : i + batch_size] for i in range(0, order.size, batch_size)]


def _gather(accelerator, local_idx: np.ndarray, local_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
) -> ScoringResult:
    """
    Margins of the pairs `indices`, returned in their order and identical on every process. `fetch(indices)` returns
    their `(chosen_ids, rejected_ids)` token lists and `lengths[i]` is pair i's longer side.

    Example:

    ```python
    >>> import numpy as np, torch
    >>> from datasets import Dataset
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from mars_trl.pool import dataset_fetch, pair_lengths
    >>> from mars_trl.scoring import score_margins
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
    ...     num_attention_heads=1, intermediate_size=8, num_labels=1))
    >>> data = Dataset.from_dict({"chosen_ids": [[1, 2, 3], [4, 5]], "rejected_ids": [[1, 2], [6, 7, 8, 9]]})
    >>> result = score_margins(model, dataset_fetch(data), np.arange(2), pair_lengths(data), pad_token_id=0, batch_size=2,
    ...     show_progress=False)
    >>> result.margins.shape
    (2,)
    ```
    """
    start = time.perf_counter()
    indices = np.asarray(indices, dtype=np.int64)
    num_processes = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    batches = _batches(indices, lengths, batch_size)
    mine = batches[rank::num_processes]
    # Every process runs the same number of forward passes: sharded models (ZeRO-3, FSDP) gather parameters
    # collectively in each forward, so a process that stopped early would hang the others.
    per_process = -(-len(batches) // num_processes)

    collator = DataCollatorForPreference(pad_token_id=pad_token_id)
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    local_idx, local_val = [], []
    progress = tqdm(
        total=sum(len(b) for b in mine),
        desc=description,
        unit="pair",
        disable=not show_progress or rank != 0,
        leave=False,
    )
    try:
        for step in range(per_process):
            real = step < len(mine)
            batch = mine[step] if real else batches[0]
            chosen_ids, rejected_ids = fetch(batch.tolist())
            examples = [{"chosen_ids": c, "rejected_ids": r} for c, r in zip(chosen_ids, rejected_ids)]
            inputs = {k: v.to(device) for k, v in collator(examples).items()}
            ctx = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
            with ctx:
                rewards = model(**inputs, use_cache=False).logits.squeeze(-1).float()
            chosen, rejected = torch.chunk(rewards, 2)
            if real:
                local_idx.append(batch)
                local_val.append((chosen - rejected).double().cpu().numpy())
                progress.update(len(batch))
    finally:
        progress.close()
        model.train(was_training)
    local_idx_arr = np.concatenate(local_idx) if local_idx else np.zeros(0, dtype=np.int64)
    local_val_arr = np.concatenate(local_val) if local_val else np.zeros(0, dtype=np.float64)
    all_idx, all_val = _gather(accelerator, local_idx_arr, local_val_arr)
    # Back to the caller's order.
    position = {int(i): k for k, i in enumerate(all_idx)}
    margins = np.array([all_val[position[int(i)]] for i in indices], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(margins))
    if bad.size:
        raise FloatingPointError(
            f"The reward model returned a non-finite margin ({margins[bad[0]]}) for training pair {int(indices[bad[0]])} "
            f"({bad.size} such pairs). Training has diverged or that pair's inputs are degenerate: lower the learning "
            "rate, turn off fp16, or resume from an earlier checkpoint. Nothing already saved was changed."
        )
    return ScoringResult(indices=indices, margins=margins, seconds=time.perf_counter() - start)
