"""Budget allocation: how many augmented variants each labelled pair receives in a refinement round."""

from __future__ import annotations

import numpy as np

from ..names import AUGMENT_STRATEGIES
from .margins import sampling_weights


def largest_remainder(shares: np.ndarray, total: int, seed: int = 0) -> np.ndarray:
    """
    Integer counts proportional to `shares` that sum to `total` exactly (Hamilton's largest-remainder method).

    Each pair gets `floor(total * share)`; the units left over go to the largest fractional parts, ties broken by a
    seeded random order so equal pairs are treated alike across runs but not always in index order.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.sampling.allocation import largest_remainder
    >>> largest_remainder(np.array([0.5, 0.3, 0.2]), 7).tolist()
    [4, 2, 1]
    ```
    """
    shares = np.asarray(shares, dtype=np.float64)
    if total < 0:
        raise ValueError(f"The budget must be >= 0, got {total}.")
    if shares.size == 0:
        if total:
            raise ValueError("Cannot allocate a positive budget over zero pairs.")
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(shares)) or np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError("Allocation shares must be finite, non-negative and not all zero.")
    exact = shares / shares.sum()
    exact *= total
    counts = exact.astype(np.int64)  # truncation is the floor: exact >= 0
    left = int(total - counts.sum())
    if left:
        # In place: at 1e7 pairs a fresh temporary costs 30-250 ms of page faults here, more than the arithmetic.
        fraction = exact
        fraction -= counts
        # The `left` largest fractions, ties at the cut broken by the seeded order; partitions, not a full sort, so a
        # round stays linear in the number of pairs.
        cut = np.partition(fraction, fraction.size - left)[fraction.size - left]
        above = fraction > cut
        counts[above] += 1
        tied = np.flatnonzero(fraction == cut)
        need = left - int(above.sum())
        if need < tied.size:
            # Drawn only when ties are cut (always for `uniform`, rarely otherwise): 1e7 uniforms cost ~0.1 s.
            tiebreak = np.random.default_rng(np.random.SeedSequence([seed, shares.size, total])).random(shares.size)
            tied = tied[np.argpartition(tiebreak[tied], need - 1)[:need]]
        counts[tied] += 1
    return counts


def capped_largest_remainder(shares: np.ndarray, total: int, cap: int | None = None, seed: int = 0) -> np.ndarray:
    """
    [`largest_remainder`] with no count above `cap`: a capped pair's surplus goes to the others, by their shares.

    Water-filling: pairs whose exact share of what is left exceeds `cap` are fixed at `cap` and the rest is shared
    again among the others, until no exact share exceeds the cap; the counts still sum to `total`. `cap=None` is
    [`largest_remainder`] itself.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.sampling.allocation import capped_largest_remainder
    >>> capped_largest_remainder(np.array([0.7, 0.2, 0.1]), 10, cap=4).tolist()
    [4, 4, 2]
    ```
    """
    if cap is None:
        return largest_remainder(shares, total, seed)
    shares = np.asarray(shares, dtype=np.float64)
    if cap < 0 or cap * shares.size < total:
        raise ValueError(
            f"A per-pair cap of {cap} cannot hold a budget of {total} over {shares.size} pairs (at most "
            f"{max(cap, 0) * shares.size}). Raise `augment_max_per_pair` to at least {-(-total // max(shares.size, 1))} "
            "or lower the budget."
        )
    fixed = np.zeros(shares.size, dtype=bool)
    while True:
        free = ~fixed
        left = total - cap * int(fixed.sum())
        weight = shares[free].sum()
        if left == 0 or weight <= 0:
            break
        over = np.flatnonzero(free)[shares[free] * (left / weight) > cap]
        if over.size == 0:
            break
        fixed[over] = True
    counts = np.full(shares.size, cap, dtype=np.int64)
    counts[~fixed] = 0
    if left and free.any():
        # Pairs with zero share cannot take the rest: spread it evenly over the free pairs instead.
        rest = shares[free] if weight > 0 else np.ones(int(free.sum()))
        counts[free] = largest_remainder(rest, left, seed)
    # Rounding can lift an exact share of cap - epsilon to cap + 1 only through float error; move any such unit on.
    while counts.max(initial=0) > cap:
        i = int(np.argmax(counts))
        counts[i] -= 1
        counts[int(np.flatnonzero(counts < cap)[np.argmax(shares[counts < cap])])] += 1
    return counts


def allocate(
    strategy: str,
    margins: np.ndarray,
    budget: int,
    tau: float = 0.5,
    mode: str = "signed",
    seed: int = 0,
    standardize: bool = False,
    max_per_pair: int | None = None,
) -> np.ndarray:
    r"""
    Variants per labelled pair for one round; the counts sum to `budget` for every strategy (matched budgets).

    - `"mars"`: $q_i = \mathrm{softmax}(-\tau D_i)$: hard and mis-ranked pairs get most of the budget.
    - `"uniform"` and `"west_of_n"`: the budget spread evenly (West-of-N differs in *which* variants it keeps: the
      highest-margin ones).
    - `"none"`: nothing.

    `standardize=True` standardises the margins first (as `margin_standardize` does for sampling): with a reward
    scale much smaller than $1/\tau$, as early in training, softmax(-tau * D) is nearly flat and `mars` allocates
    almost exactly like `uniform`.

    `max_per_pair` caps any one pair's count (the surplus goes to the other pairs by their shares): in human-labelled
    data the most mis-ranked pairs are often mislabelled ones, and signed `mars` gives them the most variants.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.sampling.allocation import allocate
    >>> allocate("mars", np.array([-2.0, 0.0, 4.0]), 10).tolist()
    [7, 3, 0]
    >>> allocate("uniform", np.array([-2.0, 0.0, 4.0]), 10, seed=1).sum()
    np.int64(10)
    ```
    """
    margins = np.asarray(margins, dtype=np.float64)
    if strategy == "none":
        return np.zeros(margins.size, dtype=np.int64)
    if strategy in ("uniform", "west_of_n"):
        return capped_largest_remainder(np.ones(margins.size), budget, max_per_pair, seed)
    if strategy == "mars":
        shares = sampling_weights(margins, tau=tau, mode=mode, floor=0.0, standardize=standardize)
        return capped_largest_remainder(shares, budget, max_per_pair, seed)
    raise ValueError(f"Unknown augmentation strategy {strategy!r}: use one of {AUGMENT_STRATEGIES}.")


def draw_variants(pool_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Which of a pair's `pool_size` cached variants to use: without replacement while they last, then with."""
    if count <= 0 or pool_size <= 0:
        return np.zeros(0, dtype=np.int64)
    if count <= pool_size:
        return rng.permutation(pool_size)[:count].astype(np.int64)
    return np.concatenate([rng.permutation(pool_size), rng.integers(0, pool_size, count - pool_size)]).astype(np.int64)
