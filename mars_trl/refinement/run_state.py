"""What a checkpoint keeps of a MARS run, and how a resumed run gets it back: the margin table, the sampler's state,
and the augmentation rounds' pool and variant cache (in the files `checkpoint` writes)."""

from __future__ import annotations

from .checkpoint import load_state, save_state


def save_run_state(directory: str, callback) -> None:
    """Write the MARS state of the run `callback` (a [`MarsCallback`]) drives into the checkpoint folder `directory`."""
    table = callback.margin_table()
    sampler_state = callback.sampler.state_dict()
    weights = sampler_state.pop("weights")
    scalars = {
        "last_refresh_epoch": callback.last_refresh_epoch,
        "current_epoch": callback.current_epoch,
        "sampler": sampler_state,
        "has_weights": weights is not None,
    }
    arrays = {"margins": table.values, "margin_epoch": table.epoch}
    if weights is not None:
        arrays["weights"] = weights
    files = {}
    if callback.refiner is not None:
        scalars["refiner"], files = callback.refiner.state()
    save_state(directory, scalars, arrays, files)


def load_run_state(directory: str, callback) -> None:
    """Restore the run `callback` drives from the MARS state in the checkpoint folder `directory`."""
    scalars, arrays, files = load_state(directory)
    if callback.refiner is not None and "refiner" in scalars:
        callback.refiner.load(scalars["refiner"], files)
    table = callback.margin_table()
    table.load_state_dict({"values": arrays["margins"], "epoch": arrays["margin_epoch"]})
    if len(table) != len(callback.pool):
        raise ValueError(
            f"MARS state in {directory} has margins for {len(table)} pairs but the pool holds {len(callback.pool)}: "
            "resume with the same training data and augmenter settings as the run that wrote it."
        )
    callback.last_refresh_epoch = int(scalars["last_refresh_epoch"])
    callback.current_epoch = int(scalars["current_epoch"])
    sampler_state = dict(scalars["sampler"])
    sampler_state["weights"] = arrays["weights"] if scalars["has_weights"] else None
    callback.sampler.load_state_dict(sampler_state)
