"""`MarginAwareSampler`: a fixed-length, seeded, weighted sampler that every process iterates identically."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class MarginAwareSampler(Sampler[int]):
    r"""
    Draws `num_samples` pair indices per epoch, in one of two ways.

    - `coverage=True` (`epoch_length="pool"`, the default): every pair of the pool once, plus
      `num_samples - num_pairs` extra draws from the weights (uniform while there are none), all shuffled together.
      No pair is ever left out of an epoch; hard pairs come up more often only through the extra draws.
    - `coverage=False` (`epoch_length="fixed"`): without weights, random permutations (plain shuffling); with
      weights, `num_samples` draws with replacement from them, so hard pairs come up more often and some pairs not
      at all in an epoch.

    The sequence depends only on `(seed, epoch, weights, num_samples)`. Accelerate shards the *batches* of one
    global sequence across processes, so every process must produce the same sequence: it does, given the same
    weights. [`MarsRewardTrainer`] sets each epoch's `num_samples` from the run's plan before the epoch starts.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl import MarginAwareSampler
    >>> sampler = MarginAwareSampler(num_pairs=4, seed=0)
    >>> sorted(sampler)  # warm-up: a permutation
    [0, 1, 2, 3]
    >>> sampler.set_weights(np.array([0.97, 0.01, 0.01, 0.01]))
    >>> sampler.set_length(6)
    >>> draws = sampler.indices()
    >>> sorted(set(draws.tolist())), len(draws)  # every pair once, plus two extra draws
    ([0, 1, 2, 3], 6)
    ```
    """

    def __init__(self, num_pairs: int, num_samples: int | None = None, seed: int = 0, coverage: bool = True):
        if num_pairs < 1:
            raise ValueError(f"`num_pairs` must be >= 1, got {num_pairs}: the training dataset is empty.")
        self.num_pairs = int(num_pairs)
        self.num_samples = int(num_samples) if num_samples is not None else self.num_pairs
        if self.num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
        self.seed = int(seed)
        self.coverage = bool(coverage)
        self.epoch = 0
        self.weights: np.ndarray | None = None
        self._cdf: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_length(self, num_samples: int) -> None:
        """Draw `num_samples` indices per epoch from now on (the pool epoch grows with the pool)."""
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)

    def set_weights(self, weights: np.ndarray | None) -> None:
        """Sampling weights over the first `len(weights)` indices (the pool may have grown); `None` for shuffling."""
        if weights is None:
            self.weights, self._cdf = None, None
            return
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"Sampling weights must be a non-empty 1-D array, got shape {w.shape}.")
        if not np.isfinite(w).all() or w.min() < 0 or w.sum() <= 0:
            raise ValueError("Sampling weights must be finite, non-negative, and not all zero.")
        self.num_pairs = w.size
        self.weights = w / w.sum()
        cdf = np.cumsum(self.weights)
        cdf[-1] = 1.0  # guard the last bucket against round-off
        self._cdf = cdf

    def set_pool_size(self, num_pairs: int) -> None:
        """Shuffle over `num_pairs` indices (the pool grew) while no weights are set."""
        if num_pairs < 1:
            raise ValueError(f"`num_pairs` must be >= 1, got {num_pairs}.")
        self.num_pairs = int(num_pairs)

    def _rng(self) -> np.random.Generator:
        # SeedSequence mixes both words, so epochs with nearby seeds do not share streams.
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))

    def indices(self) -> np.ndarray:
        """This epoch's index sequence, as an int64 array."""
        rng = self._rng()
        if self.coverage:
            extra = self.num_samples - self.num_pairs
            if extra <= 0:
                return rng.permutation(self.num_pairs)[: self.num_samples].astype(np.int64)
            draws = np.concatenate([np.arange(self.num_pairs, dtype=np.int64), self._draw(rng, extra)])
            rng.shuffle(draws)
            return draws
        if self._cdf is None:
            reps = -(-self.num_samples // self.num_pairs)
            perms = [rng.permutation(self.num_pairs) for _ in range(reps)]
            return np.concatenate(perms)[: self.num_samples].astype(np.int64)
        draws = self._draw(rng, self.num_samples)
        rng.shuffle(draws)
        return draws

    def _draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` sorted i.i.d. draws from the weights (uniform over the pool without weights)."""
        if self._cdf is None:
            return np.sort(rng.integers(0, self.num_pairs, count))
        # Sorted uniforms in O(n) (normalised partial sums of exponentials are uniform order statistics), so the
        # CDF lookup streams through memory instead of missing cache on every step (~20x faster at 1e7 pairs); the
        # caller shuffles.
        sums = np.cumsum(rng.standard_exponential(count + 1))
        sums /= sums[-1]
        return np.searchsorted(self._cdf, sums[:-1], side="right").astype(np.int64, copy=False)

    def seen_fraction(self, num_labelled: int) -> float:
        """Expected share of the first `num_labelled` pairs (the labelled ones) that this epoch visits at least once."""
        if self.coverage:
            return 1.0
        if self.weights is None:  # permutations: all of them once the epoch is at least one pass long
            return min(1.0, self.num_samples / self.num_pairs)
        # P(pair i never drawn in n draws) = (1 - w_i)^n, computed as exp(n * log1p(-w_i)).
        missed = np.log1p(-np.minimum(self.weights[:num_labelled], 1.0 - 1e-16))
        missed *= self.num_samples
        np.exp(missed, out=missed)
        return float(1.0 - missed.mean())

    def __iter__(self) -> Iterator[int]:
        yield from self.indices().tolist()

    def state_dict(self) -> dict:
        return {
            "num_pairs": self.num_pairs,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "epoch": self.epoch,
            "weights": None if self.weights is None else self.weights.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.num_samples = int(state["num_samples"])
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.num_pairs = int(state["num_pairs"])
        self.set_weights(state["weights"])
