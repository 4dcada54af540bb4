"""Deprecated: `mars_trl.pool` was split into `mars_trl.refinement.pool`, `.variant_cache`, `mars_trl.sampling.scoring` and `mars_trl.names` (this alias goes in the next release)."""

from .deprecation import warn_moved

warn_moved(
    "mars_trl.pool",
    "mars_trl.refinement.pool, mars_trl.refinement.variant_cache, mars_trl.sampling.scoring, mars_trl.names",
    stacklevel=3,
)


from .names import LOSS_MARGIN, ROUND, SOURCE, TOKEN_COLUMNS, VARIANT  # noqa: E402
from .refinement.pool import PairPool  # noqa: E402
from .refinement.variant_cache import VariantCache  # noqa: E402
from .sampling.scoring import dataset_fetch, pair_lengths  # noqa: E402

__all__ = [
    "LOSS_MARGIN",
    "PairPool",
    "ROUND",
    "SOURCE",
    "TOKEN_COLUMNS",
    "VARIANT",
    "VariantCache",
    "dataset_fetch",
    "pair_lengths",
]
