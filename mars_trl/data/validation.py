"""Input checks with one-line errors that name the problem and the fix, run before any work is done."""

from __future__ import annotations

import difflib

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, Value

from ..names import LEGACY_TOKEN_COLUMNS, TEXT_COLUMNS, TOKEN_COLUMNS


class DataError(ValueError):
    """The training or evaluation data cannot be used as given."""


def _suggest(missing: str, names: list[str]) -> str:
    close = difflib.get_close_matches(missing, names, n=1, cutoff=0.6)
    return (
        f" (did you mean `{close[0]}`? rename it with `dataset.rename_column('{close[0]}', '{missing}')`)"
        if close
        else ""
    )


def _first_null(dataset: Dataset, column: str) -> int | None:
    """The first row whose `column` is None (Arrow's null count makes the common case, none, free)."""
    values = dataset.with_format("arrow")[column]
    if values.null_count == 0:
        return None
    return int(pc.index(pc.is_null(values), True).as_py())


def _kind(feature) -> str:
    """'text', 'messages', or a description of anything else."""
    if isinstance(feature, Value):
        return "text" if feature.dtype in ("string", "large_string") else feature.dtype
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    if isinstance(inner, dict) and "content" in inner:
        return "messages"
    return type(feature).__name__


def validate_preference_dataset(dataset, name: str = "train") -> None:
    """
    Check a preference `datasets.Dataset` before preparation: the columns exist (with a suggestion for a misspelt
    one), text columns are all plain text or all message lists, a `margin` column is numeric, and there are rows.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from mars_trl.data.validation import validate_preference_dataset
    >>> validate_preference_dataset(Dataset.from_dict({"choosen": ["a"], "rejected": ["b"]}))
    Traceback (most recent call last):
    ...
    mars_trl.data.validation.DataError: The train dataset has no `chosen` column (did you mean `choosen`? ...
    ```
    """
    if not isinstance(dataset, Dataset):
        return
    if len(dataset) == 0:
        raise DataError(f"The {name} dataset is empty: pass at least one preference pair.")
    names = list(dataset.column_names)
    pretokenized = any(all(c in names for c in columns) for columns in (TOKEN_COLUMNS, LEGACY_TOKEN_COLUMNS))
    if not pretokenized:
        for column in ("chosen", "rejected"):
            if column not in names:
                raise DataError(
                    f"The {name} dataset has no `{column}` column{_suggest(column, names)}. Preference data needs "
                    f"`chosen` and `rejected` (and optionally `prompt`), or pre-tokenized `chosen_ids`/`rejected_ids`; "
                    f"it has {names}."
                )
        kinds = {c: _kind(dataset.features[c]) for c in TEXT_COLUMNS if c in names}
        unknown = {c: k for c, k in kinds.items() if k not in ("text", "messages")}
        if unknown:
            column, kind = next(iter(unknown.items()))
            raise DataError(
                f"The {name} dataset's `{column}` column holds {kind}, not text or a list of "
                "{'role', 'content'} messages. Convert it to strings (standard format) or message lists "
                "(conversational format)."
            )
        if len(set(kinds.values())) > 1:
            raise DataError(
                f"The {name} dataset mixes standard and conversational columns ({kinds}). Use one format for "
                "prompt, chosen and rejected: all strings, or all lists of {'role', 'content'} messages."
            )
        for column in kinds:
            row = _first_null(dataset, column)
            if row is not None:
                raise DataError(
                    f"The {name} dataset's `{column}` column is empty (None) in row {row}. Fill it in or drop such "
                    f"rows, e.g. `dataset.filter(lambda row: row['{column}'] is not None)`."
                )
    if "margin" in names:
        feature = dataset.features["margin"]
        if not (isinstance(feature, Value) and (feature.dtype.startswith(("float", "int", "uint")))):
            raise DataError(
                f"The {name} dataset's `margin` column must be numeric (TRL subtracts it from the reward margin in "
                f"the loss), got {feature}. Convert it, e.g. `dataset.cast_column('margin', Value('float32'))`, or "
                "remove it."
            )
        values = np.asarray(dataset.with_format("numpy")["margin"], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(
                f"The {name} dataset's `margin` column holds {values[bad[0]]} in row {bad[0]} ({bad.size} non-finite "
                "value(s) in all): TRL subtracts it from the reward margin in the loss, so it must be a finite number. "
                "Fill in or drop those rows."
            )


def validate_prepared_dataset(dataset, max_length, name: str = "train") -> None:
    """Checks after tokenization: something survived the `max_length` filter, and not every pair is degenerate."""
    if not isinstance(dataset, Dataset):
        return
    if len(dataset) == 0:
        raise DataError(
            f"The {name} dataset is empty after preprocessing: every pair was dropped, most likely by the "
            f"`max_length={max_length}` filter (pairs whose chosen or rejected side is longer are removed). Raise "
            "`max_length`, set it to None, or shorten the data."
        )
    plain = dataset.with_format(None).select_columns(list(TOKEN_COLUMNS))
    identical = sum(c == r for c, r in zip(plain["chosen_ids"], plain["rejected_ids"]))
    if identical == len(dataset):
        raise DataError(
            f"In every pair of the {name} dataset the chosen and rejected sides are identical after tokenization, so "
            "there is no preference to learn. Check that `chosen` and `rejected` hold different responses (and "
            "that truncation or a chat template did not erase the difference)."
        )
