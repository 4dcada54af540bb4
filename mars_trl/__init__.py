"""mars-trl: MARS (Margin-Aware Reward-modeling with Self-refinement) as a drop-in extension of TRL.

Swap `trl.RewardTrainer` for `MarsRewardTrainer`; everything else stays the same.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> module. Imported on first use, as `trl` and `transformers` do: `import mars_trl` (and so
# `mars-trl --help`) costs nothing; `from mars_trl import MarsRewardTrainer` imports TRL then.
_EXPORTS = {
    "MarginAwareSampler": "sampling.sampler",
    "MarginTable": "sampling.margins",
    "MarsArguments": "config",
    "MarsConfig": "config",
    "MarsRewardTrainer": "trainer",
    "margin_statistics": "sampling.margins",
    "sampling_weights": "sampling.margins",
}

__all__ = [
    "MarginAwareSampler",
    "MarginTable",
    "MarsArguments",
    "MarsConfig",
    "MarsRewardTrainer",
    "margin_statistics",
    "sampling_weights",
]

if TYPE_CHECKING:
    from .config import MarsArguments, MarsConfig
    from .sampling.margins import MarginTable, margin_statistics, sampling_weights
    from .sampling.sampler import MarginAwareSampler
    from .trainer import MarsRewardTrainer


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
