"""Data-preparation fixes that let `RewardTrainer`'s own pipeline run on encoder reward models (BERT, RoBERTa,
DeBERTa, MiniLM): tokenizers with no eos token and no chat template."""

from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace

from trl.data_utils import is_conversational

from ..names import TOKEN_COLUMNS

logger = logging.getLogger(__name__)

#: Used only when conversational data meets a tokenizer without a chat template. Encoders get their own [CLS] ... [SEP]
#: around the transcript, as their pre-training saw; role names stay visible so the model can tell the turns apart.
PLAIN_CHAT_TEMPLATE = (
    "{% if cls_token is defined and cls_token %}{{ cls_token }}{% elif bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if sep_token is defined and sep_token %}{{ sep_token }}{% elif eos_token %}{{ eos_token }}{% endif %}"
)


@contextlib.contextmanager
def empty_eos(processing_class):
    """
    Encoder tokenizers (BERT-style) have no eos token, and stock TRL appends `eos_token` to every standard-format
    response, failing on `None`. An encoder needs no eos (it adds its own [SEP]), so during data preparation the eos
    is the empty string, which `str.endswith` always matches: nothing is appended.
    """
    had_none = getattr(processing_class, "eos_token", None) is None
    if had_none:
        processing_class.eos_token = ""
    try:
        yield
    finally:
        if had_none:
            processing_class.eos_token = None


def ensure_chat_template(dataset, processing_class) -> None:
    """Give a template-less tokenizer `PLAIN_CHAT_TEMPLATE` when the data is conversational, and say so once."""
    if getattr(processing_class, "chat_template", None) is not None or "chosen_ids" in (dataset.column_names or []):
        return
    first = next(iter(dataset))
    if not is_conversational(first):
        return
    processing_class.chat_template = PLAIN_CHAT_TEMPLATE
    logger.warning(
        f"{type(processing_class).__name__} has no chat template and the data is conversational: using a plain "
        "'Role: content' template inside the tokenizer's own special tokens. To choose another, set "
        "`tokenizer.chat_template` or `chat_template_path` in the config."
    )


def truncate_pair(chosen: list[int], rejected: list[int], limit: int, special: set[int]) -> tuple[list, list]:
    """
    Fit a tokenized pair into `limit` tokens a side, the same way for both sides: first drop the oldest tokens of
    the part they share (the prompt: its oldest turns go first), keeping a leading special token such as [CLS] or
    <bos>; then cut each response's tail, keeping a final special token such as <eos> or [SEP] (the reward is read
    at the last token).

    Example:

    ```python
    >>> from mars_trl.data.preparation import truncate_pair
    >>> truncate_pair([0, 5, 6, 7, 8, 1], [0, 5, 6, 7, 9, 9, 1], limit=5, special={0, 1})
    ([0, 7, 8, 1], [0, 7, 9, 9, 1])
    ```
    """
    longest = max(len(chosen), len(rejected))
    if longest <= limit:
        return chosen, rejected
    shared = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        shared += 1
    head = 1 if shared and chosen[0] in special else 0
    # The shared part loses at most all but its last token: the responses keep the token they follow.
    cut = min(longest - limit, max(shared - head - 1, 0))
    chosen, rejected = chosen[:head] + chosen[head + cut :], rejected[:head] + rejected[head + cut :]

    def tail(ids: list[int]) -> list[int]:
        if len(ids) <= limit:
            return ids
        return ids[: limit - 1] + ids[-1:] if ids[-1] in special and limit > 1 else ids[:limit]

    return tail(chosen), tail(rejected)


def truncate_dataset(dataset, limit: int, special_ids, dataset_name: str):
    """`truncate_pair` over a prepared dataset (`chosen_ids`/`rejected_ids`); returns it and how many pairs it cut."""
    from datasets import Dataset

    fn_kwargs = {"limit": limit, "special": set(special_ids)}
    if not isinstance(dataset, Dataset):
        return dataset.map(_truncated, fn_kwargs=fn_kwargs), 0
    plain = dataset.with_format(None).select_columns(list(TOKEN_COLUMNS))
    count = sum(max(len(c), len(r)) > limit for c, r in zip(plain["chosen_ids"], plain["rejected_ids"]))
    if count == 0:
        return dataset, 0
    return dataset.map(_truncated, fn_kwargs=fn_kwargs, desc=f"Truncating {dataset_name}"), count


def _truncated(example, limit, special):
    chosen, rejected = truncate_pair(example["chosen_ids"], example["rejected_ids"], limit, special)
    return {"chosen_ids": chosen, "rejected_ids": rejected}


def prepare_as_reward_trainer(dataset, tokenizer, max_length, dataset_num_proc=None, name="evaluation", trainer=None):
    """
    Tokenize preference data as RewardTrainer's preparation does, with or without a trainer.

    With `trainer`, its own `_prepare_dataset` (TRL's seam for subclasses, so any override applies) runs with its
    `processing_class` and `args`. Without one, [`ensure_chat_template`] and an empty eos (if the tokenizer has none)
    come first, as in `MarsRewardTrainer`'s override, then TRL's `RewardTrainer._prepare_dataset`.
    """
    if trainer is not None:
        return trainer._prepare_dataset(dataset, trainer.processing_class, trainer.args, name)
    from trl import RewardTrainer

    ensure_chat_template(dataset, tokenizer)
    args = SimpleNamespace(max_length=max_length, dataset_num_proc=dataset_num_proc)
    with empty_eos(tokenizer):
        # The one place RewardTrainer's preparation runs without a trainer: `_prepare_dataset` does not touch `self`.
        return RewardTrainer._prepare_dataset(None, dataset, tokenizer, args, name)
