"""The planned run: how many pairs each epoch draws, which epochs run an augmentation round and what each may add.

MARS's default epoch (`epoch_length="pool"`) is the authors' training set D_t = D_0 + S: every pair of the current
pool once, plus a few extra draws by margin. The pool grows at each round, so epochs grow too. Trainer fixes
`max_steps` (and with it the LR schedule, the progress bar and the resume arithmetic) before the first step, so the
growth is planned here at train start from what is known then: the labelled set, the round schedule and the budget.
An epoch always draws its planned number of pairs: if a round adds fewer than its budget (variants over
`max_length`, a failed generation), the shortfall is drawn by margin weight from the pool instead.

Example:

```python
>>> from mars_trl import MarsArguments
>>> from mars_trl.sampling.schedule import plan_run
>>> plan = plan_run(MarsArguments(augment_budget_ratio=2.0), num_labelled=100, num_epochs=3, augmenting=True)
>>> plan.round_epochs, plan.round_budgets, plan.epoch_samples
((1, 2), (100, 100), (100, 200, 300))
```
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunPlan:
    """Per-epoch draws and the augmentation rounds of one run (see the module docstring)."""

    #: Pairs each epoch draws: its planned pool plus the extra margin-weighted draws.
    epoch_samples: tuple[int, ...]
    #: Epochs at whose start an augmentation round runs, and the pairs each round may add.
    round_epochs: tuple[int, ...]
    round_budgets: tuple[int, ...]
    #: Planned pool size in each epoch (labelled pairs plus every budget spent so far).
    pool_sizes: tuple[int, ...]

    @property
    def num_epochs(self) -> int:
        return len(self.epoch_samples)

    def samples(self, epoch: int) -> int:
        """Pairs drawn in `epoch` (the last planned epoch's count for any later one)."""
        return self.epoch_samples[min(epoch, self.num_epochs - 1)]

    def budget(self, epoch: int) -> int:
        """What the round at the start of `epoch` may add (0: no round planned then)."""
        if epoch in self.round_epochs:
            return self.round_budgets[self.round_epochs.index(epoch)]
        return 0


def refresh_epochs(mars, num_epochs: int) -> list[int]:
    """Epochs in `[0, num_epochs)` that start with a margin refresh: after the warm-up, every `margin_refresh_epochs`."""
    return list(range(mars.margin_warmup_epochs, num_epochs, mars.margin_refresh_epochs))


def total_budget(mars, num_labelled: int) -> int:
    """Augmented pairs added over the whole run: `augment_budget`, else `augment_budget_ratio` x labelled pairs."""
    if mars.augment_budget is not None:
        return int(mars.augment_budget)
    return int(round(mars.augment_budget_ratio * num_labelled))


def plan_run(mars, num_labelled: int, num_epochs: int, augmenting: bool) -> RunPlan:
    """
    The plan of a run of `num_epochs` epochs over `num_labelled` labelled pairs under the settings `mars`
    (a [`MarsArguments`]). `augmenting`: an augmenter is set and the strategy adds pairs.
    """
    from .allocation import largest_remainder

    rounds = refresh_epochs(mars, num_epochs) if augmenting else []
    if mars.augment_max_rounds is not None:
        rounds = rounds[: mars.augment_max_rounds]
    budgets = largest_remainder(np.ones(len(rounds)), total_budget(mars, num_labelled)) if rounds else []
    added = dict(zip(rounds, (int(b) for b in budgets)))
    first_weighted = mars.margin_warmup_epochs if mars.margin_sampling else num_epochs
    pool, pools, samples = num_labelled, [], []
    for epoch in range(num_epochs):
        pool += added.get(epoch, 0)
        pools.append(pool)
        if mars.epoch_length == "fixed":
            samples.append(int(mars.margin_num_samples or num_labelled))
        else:
            extra = int(round(mars.margin_extra_fraction * pool)) if epoch >= first_weighted else 0
            samples.append(pool + extra)
    return RunPlan(tuple(samples), tuple(rounds), tuple(int(b) for b in budgets), tuple(pools))


def plan_for_steps(
    mars, num_labelled: int, augmenting: bool, updates_for: Callable[[int], int], max_steps: int
) -> RunPlan:
    """
    The plan of a run bounded by `max_steps` optimizer steps; `updates_for(samples)` is the number of optimizer steps
    an epoch of `samples` pairs takes. Epochs only grow, so the epoch count is found from above: start from the count
    without growth, plan, count the epochs the steps then fill, and repeat while that count shrinks.
    """
    num_epochs = max(1, math.ceil(max_steps / updates_for(num_labelled)))
    while True:
        plan = plan_run(mars, num_labelled, num_epochs, augmenting)
        steps, needed = 0, 0
        for samples in plan.epoch_samples:
            steps += updates_for(samples)
            needed += 1
            if steps >= max_steps:
                break
        if needed >= num_epochs:
            return plan
        num_epochs = needed
