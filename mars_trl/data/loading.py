"""Loading preference data for the CLI and the examples: local json/jsonl/parquet files (gzipped too) or a Hub id."""

from __future__ import annotations

import os

from datasets import Dataset, load_dataset

from ..names import METADATA_COLUMNS

#: Columns of the files in ../shared/data (and similar exports) that are metadata, not training input.


def check_model_path(name_or_path: str, flag: str = "--model_name_or_path") -> None:
    """
    Fail with a clear message when `name_or_path` is neither an existing local folder nor something the Hub could
    hold: `./no_such_model` would otherwise reach the Hub client and fail on its repo-id syntax.
    """
    if os.path.exists(os.path.expanduser(name_or_path)):
        return
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise FileNotFoundError(
            f"{flag} {name_or_path}: no such local folder (from {os.getcwd()}). Pass an existing checkpoint folder, "
            "or a Hub model id such as `org/model`."
        ) from None


def _builder(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".json", ".jsonl")):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise ValueError(f"Cannot tell the format of {path}: use a .json, .jsonl, .parquet or .csv file (optionally .gz).")


def load_preference_dataset(
    name_or_path: str,
    config: str | None = None,
    split: str = "train",
    drop_metadata: bool = True,
    subset: str | None = None,
) -> Dataset:
    """
    A preference dataset from a local file or folder of such files, or from the Hugging Face Hub.

    Metadata columns (`id`, `dataset`, `label_source`, `meta`) are dropped; `subset` keeps only rows whose `subset`
    column equals it (the files in `../shared/data` carry one).

    Example:

    ```python
    >>> import json, tempfile, os
    >>> from mars_trl.data.loading import load_preference_dataset
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write(json.dumps({"id": 1, "prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\\n")
    >>> load_preference_dataset(path).column_names
    ['prompt', 'chosen', 'rejected']
    ```
    """
    if os.path.exists(name_or_path):
        if os.path.isdir(name_or_path):
            files = sorted(
                os.path.join(name_or_path, f)
                for f in os.listdir(name_or_path)
                if f.endswith((".json", ".jsonl", ".parquet", ".csv", ".json.gz", ".jsonl.gz", ".csv.gz"))
            )
            if not files:
                raise ValueError(f"No .json/.jsonl/.parquet/.csv files in the folder {name_or_path}.")
        else:
            files = [name_or_path]
        builders = {_builder(f) for f in files}
        if len(builders) > 1:
            raise ValueError(f"{name_or_path} mixes file formats {sorted(builders)}: keep one format per folder.")
        dataset = load_dataset(builders.pop(), data_files=files, split="train")
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.endswith((".json", ".jsonl", ".parquet", ".gz")):
        raise FileNotFoundError(f"No such file or folder: {name_or_path}")
    else:
        dataset = load_dataset(name_or_path, config, split=split)
    if subset is not None:
        if "subset" not in dataset.column_names:
            raise ValueError(f"`subset={subset!r}` was asked for but {name_or_path} has no `subset` column.")
        dataset = dataset.filter(lambda row: row["subset"] == subset)
    if drop_metadata:
        drop = [c for c in (*METADATA_COLUMNS, "subset") if c in dataset.column_names]
        dataset = dataset.remove_columns(drop)
    return dataset
