"""Distance-weighted allocation (optional, not in the paper): pairs whose responses are semantically close get
more of a round's variants."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def distance_weights(distances: Sequence[float], beta: float = 1.0, standardize: bool = True) -> np.ndarray:
    r"""
    Allocation weights from semantic distances, $w_i = \exp(-\beta z_i)$ with $z$ the distances standardised (zero
    mean, unit std; or the raw distances with `standardize=False`), scaled to mean 1. Not in the MARS paper.

    `beta > 0` favours semantically close pairs (the subtle ones, whose contrast the reward model finds hardest),
    `beta < 0` distant ones, `beta = 0` gives all ones (the paper's allocation).

    Example:

    ```python
    >>> from mars_trl.semantic import distance_weights
    >>> distance_weights([0.1, 0.2, 0.3], beta=1.0).round(3).tolist()
    [2.174, 0.639, 0.188]
    >>> distance_weights([0.1, 0.2, 0.3], beta=0.0).tolist()
    [1.0, 1.0, 1.0]
    ```
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"distances must be a non-empty 1-D array, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances must be finite")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    if beta == 0:
        return np.ones_like(d)
    z = d
    if standardize:
        std = d.std()
        z = (d - d.mean()) / std if std > 0 else np.zeros_like(d)
    logits = -beta * z
    w = np.exp(logits - logits.max())
    return w / w.mean()


def allocate_with_distances(
    margins: Sequence[float],
    distances: Sequence[float] | None,
    budget: int,
    tau: float = 0.5,
    mode: str = "signed",
    beta: float = 1.0,
    seed: int = 0,
    standardize: bool = False,
    max_per_pair: int | None = None,
) -> np.ndarray:
    r"""
    The MARS allocation with semantic distance as a second factor (off by default; not in the paper):
    $q_i \propto \mathrm{softmax}(-\tau D_i)\, w(d_i)$ with $w$ from [`distance_weights`], made into integer counts
    that sum to `budget` exactly. With `beta=0` it is exactly `allocate("mars", ...)`. The trainer uses it when
    `semantic_distance_weighting=True`, with each labelled pair's distance as measured before rewriting (the same
    on every process). `max_per_pair` caps any one pair's count, as in `allocate`.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.semantic import allocate_with_distances
    >>> margins = np.zeros(4)  # equally hard pairs: the distance decides
    >>> allocate_with_distances(margins, [0.05, 0.1, 0.4, 0.8], budget=20, beta=1.0).tolist()
    [9, 7, 3, 1]
    ```
    """
    from ..sampling.allocation import capped_largest_remainder
    from ..sampling.margins import sampling_weights

    if distances is None:
        raise ValueError(
            "Distance-weighted allocation needs the semantic distances of the labelled pairs: the sharpener has "
            "none (was its fit() called?)."
        )
    margins = np.asarray(margins, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != margins.shape:
        raise ValueError(f"{d.size} distances for {margins.size} margins: one per labelled pair is needed")
    margin_shares = sampling_weights(margins, tau=tau, mode=mode, floor=0.0, standardize=standardize)
    shares = margin_shares * distance_weights(d, beta=beta)
    return capped_largest_remainder(shares, budget, max_per_pair, seed)
