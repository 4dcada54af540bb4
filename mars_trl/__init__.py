"""mars-trl: MARS (Margin-Aware Reward-modeling with Self-refinement) as a drop-in extension of TRL.

Swap `trl.RewardTrainer` for `MarsRewardTrainer`; everything else stays the same.
"""

from .config import MarsArguments, MarsConfig
from .margins import MarginTable, margin_statistics, sampling_weights
from .sampler import MarginAwareSampler
from .trainer import MarsRewardTrainer

__version__ = "0.1.0"

__all__ = [
    "MarginAwareSampler",
    "MarginTable",
    "MarsArguments",
    "MarsConfig",
    "MarsRewardTrainer",
    "margin_statistics",
    "sampling_weights",
]
