"""Augmentation rounds (MARS's self-refinement): the controller that runs them between epochs, the pool they grow,
and what a checkpoint keeps of them.

- `callback`: [`MarsCallback`], the controller: at each refresh epoch, re-score margins, run a round, re-weight.
- `rounds`: [`Refiner`], one augmentation round: allocate, generate variants, tokenize, append to the pool.
- `pool`: [`PairPool`], the labelled pairs plus every variant, growing in place between epochs.
- `variant_cache`: [`VariantCache`], each pair's generated variants, reused by later rounds.
- `checkpoint`: the MARS state files inside a checkpoint folder, written atomically and checksummed.
- `run_state`: what a checkpoint keeps of a run (margins, sampler, pool, variant cache) and how it is restored.
- `report`: `trainer.save_mars_report()`: the run's figures and plots.
"""

from __future__ import annotations

from ..deprecation import moved_name, warn_moved


def __getattr__(name: str):
    # What `mars_trl.refinement` held when it was one module (the rounds), for one release.
    if name == "TEXT_FIELDS":
        from ..names import TEXT_COLUMNS

        warn_moved("mars_trl.refinement.TEXT_FIELDS", "mars_trl.names.TEXT_COLUMNS")
        return TEXT_COLUMNS
    return moved_name(
        __name__, name, {"Refiner": "mars_trl.refinement.rounds", "AugmenterFailure": "mars_trl.refinement.rounds"}
    )
