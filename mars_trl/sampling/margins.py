"""Margin maths: sampling weights from reward margins, their statistics, and the table of current margin estimates.

Everything here is NumPy on the CPU and deterministic: every process computes the same weights from the same margins.
"""

from __future__ import annotations

import numpy as np


def sampling_weights(
    margins: np.ndarray,
    tau: float = 0.5,
    mode: str = "signed",
    floor: float = 0.1,
    standardize: bool = False,
) -> np.ndarray:
    r"""
    MARS sampling distribution over pairs: `(1 - floor) * softmax(-tau * m) + floor / N`.

    `m` is the margin (`mode="signed"`) or its absolute value (`mode="absolute"`), standardised first when
    `standardize=True`. The result is float64, strictly positive when `floor > 0`, and sums to 1.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.sampling.margins import sampling_weights
    >>> w = sampling_weights(np.array([-2.0, 0.0, 3.0]), tau=0.5, floor=0.0)
    >>> bool(w[0] > w[1] > w[2]), round(float(w.sum()), 6)
    (True, 1.0)
    ```
    """
    m = np.asarray(margins, dtype=np.float64)
    if m.ndim != 1 or m.size == 0:
        raise ValueError(f"`margins` must be a non-empty 1-D array, got shape {m.shape}.")
    if not np.isfinite(m).all():
        bad = np.flatnonzero(~np.isfinite(m))
        raise ValueError(
            f"Margin of pair {int(bad[0])} is {m[bad[0]]} ({bad.size} non-finite margins in all). The reward model "
            "produced NaN/inf rewards: lower the learning rate, check the data of that pair, or disable fp16."
        )
    if mode == "absolute":
        w = np.abs(m)
    elif mode == "signed":
        w = m.copy()
    else:
        raise ValueError(f"`mode` must be 'signed' or 'absolute', got {mode!r}.")
    # One buffer, updated in place: at 1e7 pairs a fresh temporary costs 30-250 ms of page faults here.
    if standardize:
        std = w.std()
        if std > 0:
            w -= w.mean()
            w /= std
        else:
            w[:] = 0.0
    w *= -tau
    w -= w.max()  # stable softmax
    np.exp(w, out=w)
    w /= w.sum()
    if floor:
        w *= 1.0 - floor
        w += floor / m.size
    w /= w.sum()
    return w


def weights_with_nonfinite(margins: np.ndarray, **settings) -> np.ndarray:
    """
    [`sampling_weights`] over the finite margins; a pair with a NaN/inf margin keeps the uniform weight 1/N (the
    finite pairs share the rest of the mass as they would on their own).

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.sampling.margins import weights_with_nonfinite
    >>> w = weights_with_nonfinite(np.array([-1.0, np.nan, 1.0, 0.0]), tau=0.5, floor=0.0)
    >>> float(w[1]), round(float(w.sum()), 6)
    (0.25, 1.0)
    ```
    """
    m = np.asarray(margins, dtype=np.float64)
    finite = np.isfinite(m)
    if finite.all():
        return sampling_weights(m, **settings)
    weights = np.full(m.size, 1.0 / m.size)
    if finite.any():
        weights[finite] = sampling_weights(m[finite], **settings) * (finite.sum() / m.size)
    return weights


def bt_curvature(margins: np.ndarray) -> np.ndarray:
    """sigma'(D) = sigma(D) * (1 - sigma(D)): the Bradley-Terry loss curvature, largest (1/4) at D = 0."""
    # As e^-|D| / (1 + e^-|D|)^2: no overflow, no cancellation in 1 - sigma(D) for large D, and two buffers.
    c = np.abs(np.asarray(margins, dtype=np.float64))
    np.negative(c, out=c)
    np.exp(c, out=c)
    denominator = c + 1.0
    denominator *= denominator
    c /= denominator
    return c


def margin_statistics(
    margins: np.ndarray, weights: np.ndarray | None = None, curvature: np.ndarray | None = None
) -> dict[str, float]:
    """
    Figures logged at each refresh: margin mean/std/quantiles, fraction mis-ranked, the mean BT curvature, and, given
    the sampling weights, [`sampling_statistics`]. `curvature`, when the caller has it, is `bt_curvature(margins)`.
    """
    m = np.asarray(margins, dtype=np.float64)
    q10, q25, q50, q75, q90 = np.quantile(m, [0.1, 0.25, 0.5, 0.75, 0.9])
    if curvature is None:
        curvature = bt_curvature(m)
    stats = {
        "margin_mean": float(m.mean()),
        "margin_std": float(m.std()),
        "margin_p10": float(q10),
        "margin_p25": float(q25),
        "margin_median": float(q50),
        "margin_p75": float(q75),
        "margin_p90": float(q90),
        "misranked_fraction": float((m < 0).mean()),
        "curvature_uniform": float(curvature.mean()),
    }
    if weights is not None:
        stats.update(sampling_statistics(m, weights, curvature))
    return stats


def sampling_statistics(
    margins: np.ndarray, weights: np.ndarray, curvature: np.ndarray | None = None
) -> dict[str, float]:
    """
    The effective sample size of the sampling weights and the mean BT curvature under them versus uniform (the
    paper's argument: sampling where sigma'(D) is large carries more information per step). `curvature`, when the
    caller has it, is `bt_curvature(margins)`.
    """
    w = np.asarray(weights, dtype=np.float64)
    if curvature is None:
        curvature = bt_curvature(margins)
    ess = float(w.sum() ** 2 / np.dot(w, w))
    uniform = float(curvature.mean())
    sampled = float(np.dot(w, curvature) / w.sum())
    return {
        "ess": ess,
        "ess_fraction": ess / w.size,
        "curvature_uniform": uniform,
        "curvature_sampled": sampled,
        "curvature_ratio": sampled / max(uniform, 1e-12),
    }


class MarginTable:
    """
    Current margin estimate of every pair, with the epoch it was measured at (-1: never).

    The full source overwrites every entry at each refresh; the online source writes the margins of the pairs a
    training step just saw, and `stale()` names the pairs whose estimate is missing or too old to trust.

    Example:

    ```python
    >>> from mars_trl.sampling.margins import MarginTable
    >>> table = MarginTable(4)
    >>> table.update([0, 2], [0.5, -1.0], epoch=0)
    >>> table.stale(epoch=1, max_age=1).tolist()
    [1, 3]
    ```
    """

    def __init__(self, size: int):
        self.values = np.zeros(size, dtype=np.float64)
        self.epoch = np.full(size, -1, dtype=np.int64)

    def __len__(self) -> int:
        return self.values.size

    def update(self, indices, values, epoch: int) -> None:
        """Set the margins of `indices`; `indices=None` sets every pair's (a full refresh, without fancy indexing)."""
        if indices is None:
            indices = slice(None)
        else:
            indices = np.asarray(indices, dtype=np.int64)
        self.values[indices] = np.asarray(values, dtype=np.float64)
        self.epoch[indices] = epoch

    def stale(self, epoch: int, max_age: int) -> np.ndarray:
        """Indices never measured, or measured more than `max_age` epochs before `epoch`."""
        return np.flatnonzero((self.epoch < 0) | (epoch - self.epoch > max_age))

    def resize(self, size: int) -> None:
        """Grow to `size` pairs (new pairs: never measured); used when augmented pairs join the pool."""
        extra = size - self.values.size
        if extra < 0:
            raise ValueError(f"A margin table never shrinks: has {self.values.size} pairs, asked for {size}.")
        self.values = np.concatenate([self.values, np.zeros(extra)])
        self.epoch = np.concatenate([self.epoch, np.full(extra, -1, dtype=np.int64)])

    def state_dict(self) -> dict:
        return {"values": self.values.tolist(), "epoch": self.epoch.tolist()}

    def load_state_dict(self, state: dict) -> None:
        values = np.asarray(state["values"], dtype=np.float64)
        epochs = np.asarray(state["epoch"], dtype=np.int64)
        if values.shape != epochs.shape:
            raise ValueError(f"Corrupt margin state: {values.size} values for {epochs.size} epochs.")
        self.values, self.epoch = values, epochs
