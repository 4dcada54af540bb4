"""The training pool D_t = D_{t-1} + S: the labelled pairs followed by every augmented pair, with provenance.

The pool is a `torch.utils.data.Dataset` that grows in place between epochs. The dataloader holds the same object
for the whole run, and the sampler draws indices over its current length, so new pairs are trained on from the epoch
they join without rebuilding anything Trainer owns.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from datasets import Dataset
from torch.utils.data import Dataset as TorchDataset

from ..names import LOSS_MARGIN, ROUND, SOURCE, TOKEN_COLUMNS, VARIANT
from ..sampling.scoring import pair_lengths


class PairPool(TorchDataset):
    """
    Labelled pairs (a prepared `datasets.Dataset`) plus appended segments of augmented pairs.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from mars_trl.refinement.pool import PairPool
    >>> pool = PairPool(Dataset.from_dict({"chosen_ids": [[1, 2]], "rejected_ids": [[3]]}), index_column="idx")
    >>> pool.append([{"chosen_ids": [4], "rejected_ids": [5, 6], "mars_source": 0, "mars_round": 1, "mars_variant": 0}])
    range(1, 2)
    >>> len(pool), pool[1]["idx"], pool.sources().tolist()
    (2, 1, [0])
    ```
    """

    def __init__(
        self,
        labelled: Dataset,
        index_column: str,
        extra_columns: tuple[str, ...] = (),
        columns: tuple[str, ...] | None = None,
    ):
        self.labelled = labelled
        self.index_column = index_column
        # Columns every augmented row carries besides the tokens (e.g. TRL's `margin`, copied from its source).
        self.extra_columns = tuple(c for c in extra_columns if c in labelled.column_names)
        # What a training batch reads (None: every column). Trainer drops unused columns of a `datasets.Dataset`
        # before loading but only after loading for any other dataset, so without this each batch would decode the
        # prompt and response text (3.5 ms per batch of 64 conversational pairs) just to throw it away.
        self.columns = None if columns is None else tuple(columns)
        self.segments: list[Dataset] = []
        self._offsets = [len(labelled)]
        self._lengths: list[np.ndarray] = []
        self._views: dict[tuple[int, tuple[str, ...] | None], Dataset] = {}

    @property
    def num_labelled(self) -> int:
        return len(self.labelled)

    def __len__(self) -> int:
        return self._offsets[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        if index < 0 or index >= len(self):
            raise IndexError(f"Pool index {index} out of range for a pool of {len(self)} pairs.")
        if index < self.num_labelled:
            return -1, index
        seg = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return seg, index - self._offsets[seg]

    def _view(self, seg: int, columns: tuple[str, ...] | None) -> Dataset:
        """The labelled set (`seg < 0`) or a segment, narrowed to `columns` (None: all; views are cached)."""
        key = (seg, columns)
        if key not in self._views:
            source = self.labelled if seg < 0 else self.segments[seg]
            if columns is not None:
                source = source.select_columns([c for c in source.column_names if c in columns])
            self._views[key] = source
        return self._views[key]

    def _read(self, indices: list[int], columns: tuple[str, ...] | None) -> list[dict]:
        # One Arrow read per segment rather than one per row.
        located = [self._locate(int(i)) for i in indices]
        out: list[dict | None] = [None] * len(indices)
        for seg in {s for s, _ in located}:
            positions = [k for k, (s, _) in enumerate(located) if s == seg]
            batch = self._view(seg, columns)[[located[k][1] for k in positions]]
            for j, k in enumerate(positions):
                row = {name: values[j] for name, values in batch.items()}
                if seg >= 0 and (columns is None or self.index_column in columns):
                    row[self.index_column] = int(indices[k])
                out[k] = row
        return out

    def __getitem__(self, index: int) -> dict:
        """The whole row (an augmented one with its provenance)."""
        return self._read([index], None)[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A training batch: only the columns the trainer keeps (`columns`)."""
        return self._read(indices, self.columns)

    def fetch(self, indices: list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of the pairs `indices` (for scoring), read without the other columns."""
        rows = self._read(list(indices), TOKEN_COLUMNS)
        return [r["chosen_ids"] for r in rows], [r["rejected_ids"] for r in rows]

    def lengths(self) -> np.ndarray:
        """`(len(pool), 2)` token lengths of every pair's chosen and rejected sides (computed once per segment)."""
        if not self._lengths:
            self._lengths = [pair_lengths(self.labelled)]
        while len(self._lengths) < 1 + len(self.segments):
            self._lengths.append(pair_lengths(self.segments[len(self._lengths) - 1]))
        return np.concatenate(self._lengths)

    def append(self, rows: list[dict]) -> range:
        """Append augmented pairs (token ids, provenance, extra columns); returns their pool indices."""
        if not rows:
            return range(len(self), len(self))
        columns = [*TOKEN_COLUMNS, *self.extra_columns, SOURCE, ROUND, VARIANT]
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise ValueError(f"Augmented rows lack the columns {missing}.")
        segment = Dataset.from_dict({c: [r[c] for r in rows] for c in columns})
        start = len(self)
        self.segments.append(segment)
        self._offsets.append(start + len(segment))
        return range(start, len(self))

    def _augmented_column(self, name: str) -> np.ndarray:
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        # Straight from Arrow: reading through `datasets` builds a Python list (10 s per million pairs).
        return np.concatenate([seg.data.column(name).to_numpy().astype(np.int64) for seg in self.segments])

    def sources(self) -> np.ndarray:
        """Labelled pair each augmented pair came from, in pool order."""
        return self._augmented_column(SOURCE)

    def rounds(self) -> np.ndarray:
        return self._augmented_column(ROUND)

    def loss_offsets(self) -> np.ndarray | None:
        """TRL's `margin` column m of every pair (the loss is -log sigma(D - m)), or None when the data has none."""
        if LOSS_MARGIN not in self.extra_columns:
            return None
        parts = [
            self.labelled.with_format("arrow")[:][LOSS_MARGIN],
            *(seg.data.column(LOSS_MARGIN) for seg in self.segments),
        ]
        return np.concatenate([np.asarray(part.to_numpy(zero_copy_only=False), dtype=np.float64) for part in parts])

    # -- state: JSONL, one augmented pair per line ----------------------------------------------------------------
    def to_jsonl(self) -> bytes:
        parts = [_segment_jsonl(seg) for seg in self.segments]
        return "".join(parts).encode("utf-8")

    def load_jsonl(self, data: bytes, segment_sizes: list[int]) -> None:
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        if sum(segment_sizes) != len(rows):
            raise ValueError(f"Pool state lists {sum(segment_sizes)} augmented pairs but holds {len(rows)}.")
        self.segments, self._offsets, self._lengths = [], [self.num_labelled], []
        self._views = {k: v for k, v in self._views.items() if k[0] < 0}
        start = 0
        for size in segment_sizes:
            self.append(rows[start : start + size])
            start += size

    def reset(self) -> None:
        """Drop every augmented pair: the pool holds the labelled set again."""
        self.load_jsonl(b"", [])

    def segment_sizes(self) -> list[int]:
        return [len(seg) for seg in self.segments]


def _segment_jsonl(segment: Dataset) -> str:
    """One JSON object per line. Integer-only segments (token ids, provenance) go through pandas' C writer, ~5x
    faster than json.dumps per row; a float column (a copied `margin`) keeps json.dumps, which round-trips floats."""
    table = segment.data.table
    if not len(table):
        return ""
    integer_only = all(
        pa.types.is_integer(f.type) or (pa.types.is_list(f.type) and pa.types.is_integer(f.type.value_type))
        for f in table.schema
    )
    if integer_only:
        text = table.to_pandas().to_json(orient="records", lines=True)
        return text if text.endswith("\n") else text + "\n"
    return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in table.to_pylist())
