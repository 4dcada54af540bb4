"""Data-preparation fixes that let `RewardTrainer`'s own pipeline run on encoder reward models (BERT, RoBERTa,
DeBERTa, MiniLM): tokenizers with no eos token and no chat template."""

from __future__ import annotations

import contextlib
import logging

from trl.data_utils import is_conversational

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
