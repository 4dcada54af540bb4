"""PEFT-config repair: a `LoraConfig` that would leave the reward head random and unsaved is fixed, with one warning."""

from __future__ import annotations

import copy
import os
import warnings

from .heads import PEFT_SEQ_CLS_HEADS, RewardHeadNotFoundError, plan_heads

_SEQ_CLS = "SEQ_CLS"


class MarsPeftWarning(UserWarning):
    """A PEFT config was changed so the reward head is trained and saved."""


def caller_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first frame outside this package (the user's call)."""
    import inspect

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _task_type(peft_config) -> str | None:
    task = getattr(peft_config, "task_type", None)
    return getattr(task, "value", task)


def prepare_peft_config(peft_config, model, args=None):
    """
    A copy of `peft_config` with which the reward head is trained and saved: `task_type="SEQ_CLS"` and every head
    module in `modules_to_save`. If the config as given would have left the head frozen (and out of the saved
    adapter), one [`MarsPeftWarning`] says what was changed. `model` is the model or its name/path (see
    [`find_head_modules`]); `args` (a `RewardConfig`) supplies the revision and `trust_remote_code` used to read a
    named model's config. Returns `None` for `None`.

    Example:

    ```python
    >>> import warnings
    >>> from peft import LoraConfig
    >>> from mars_trl.peft.adapter_config import prepare_peft_config
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     fixed = prepare_peft_config(LoraConfig(r=8, target_modules=["q_proj"]), "LlamaForSequenceClassification")
    >>> fixed.task_type, fixed.modules_to_save, len(caught)
    ('SEQ_CLS', ['score'], 1)
    ```
    """
    if peft_config is None or not hasattr(peft_config, "peft_type"):
        return peft_config  # None, or not a PeftConfig (RewardTrainer raises its own TypeError)
    config = copy.deepcopy(peft_config)
    task = _task_type(config)
    given = list(getattr(config, "modules_to_save", None) or [])
    init_kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    try:
        heads, clashing = plan_heads(
            model,
            revision=init_kwargs.get("revision"),
            trust_remote_code=bool(init_kwargs.get("trust_remote_code", getattr(args, "trust_remote_code", False))),
        )
    except RewardHeadNotFoundError:
        if not given:
            raise
        # The user named the head; trust it.
        heads, clashing = [], []
    head = heads[-1] if heads else given[-1]
    # An extra head module whose name also ends a backbone module's cannot be listed without unfreezing those too.
    skipped = [name for name in heads[:-1] if name in clashing]
    wanted = [name for name in heads if name not in skipped]
    covered = set(given) | (set(PEFT_SEQ_CLS_HEADS) if task == _SEQ_CLS else set())
    # PEFT matches `modules_to_save` entries as suffixes of module names.
    missing = [name for name in wanted if not any(name.endswith(entry) for entry in covered)]
    changes = []
    if task != _SEQ_CLS:
        config.task_type = _SEQ_CLS
        if task is not None or missing:
            changes.append(f"task_type={task!r} -> 'SEQ_CLS'")
    to_add = [name for name in wanted if name not in given]
    if to_add:
        if not hasattr(config, "modules_to_save"):
            raise ValueError(
                f"{type(peft_config).__name__} has no `modules_to_save`, so the reward head `{head}` would stay "
                "random and would not be saved with the adapter. Use a LoRA-family config (e.g. `peft.LoraConfig`)."
            )
        config.modules_to_save = given + to_add
    if missing:
        changes.append(
            f"modules_to_save={getattr(peft_config, 'modules_to_save', None)!r} -> {config.modules_to_save!r}"
        )
    if changes:
        note = f" Kept frozen (their names also match backbone modules): {skipped}." if skipped else ""
        warnings.warn(
            f"peft_config changed so the reward head `{head}` is trained and saved with the adapter: "
            f"{'; '.join(changes)}. As given, the randomly initialised head would have stayed frozen and been left "
            f"out of the saved adapter. Set these in your PEFT config to silence this warning.{note}",
            MarsPeftWarning,
            stacklevel=caller_stacklevel(),
        )
    return config
