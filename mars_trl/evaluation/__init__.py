r"""Held-out evaluation of a reward model: score preference pairs and summarise the margins.

Two modules, usable on any reward model trained with `MarsRewardTrainer` or `trl.RewardTrainer`:

- `scoring`: [`score_pairs`] prepares preference data of any TRL format (standard or conversational, implicit or
  explicit prompt, or pre-tokenized `chosen_ids`/`rejected_ids`) exactly as `MarsRewardTrainer` prepares training
  data (chat template, eos handling, the `max_length` filter that drops longer pairs), then runs the model in eval
  mode with no gradient over length-sorted batches and returns the reward of each side of every pair that was kept;
- `metrics`: [`preference_metrics`] turns margins $D_i = r(x_i, y_i^+) - r(x_i, y_i^-)$ into pairwise accuracy,
  ROC-AUC, margin SNR and expected calibration error, overall and per subset (the formulas are in its docstring).

Example (a tiny untrained model, so the figures themselves mean nothing):

```python
>>> import numpy as np
>>> from datasets import Dataset
>>> from tokenizers import Tokenizer, models, pre_tokenizers
>>> from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
>>> from mars_trl.evaluation import preference_metrics, score_pairs
>>> vocab = {w: i for i, w in enumerate("[PAD] [UNK] [CLS] [SEP] a good bad answer question".split())}
>>> raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
>>> raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
>>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]")
>>> model = BertForSequenceClassification(BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=1,
...     num_attention_heads=1, intermediate_size=8, num_labels=1, pad_token_id=0))
>>> data = Dataset.from_dict({"prompt": ["question", "question"], "chosen": [" a good answer", " good"],
...     "rejected": [" a bad answer", " bad bad bad bad"], "subset": ["x", "y"]})
>>> scores = score_pairs(model, tokenizer, data, batch_size=2, max_length=4, show_progress=False)
>>> scores.rows.tolist(), scores.num_dropped  # the second pair has 5 tokens on one side: dropped, as in training
([0], 1)
>>> scores.margins.shape, sorted(scores.metrics())[:3]
((1,), ['accuracy', 'accuracy_se', 'ece'])
```
"""

from __future__ import annotations

from ..deprecation import moved_name
from ..names import ROW_COLUMN
from .metrics import (
    binary_auc,
    expected_calibration_error,
    format_metrics,
    margin_snr,
    paired_difference,
    pairwise_accuracy,
    pairwise_auc,
    preference_metrics,
)
from .scoring import PairScores, prepare_pairs, score_pairs

__all__ = [
    "PairScores",
    "ROW_COLUMN",
    "binary_auc",
    "expected_calibration_error",
    "format_metrics",
    "margin_snr",
    "paired_difference",
    "pairwise_accuracy",
    "pairwise_auc",
    "preference_metrics",
    "prepare_pairs",
    "score_pairs",
]


def __getattr__(name: str):
    # The `mars-trl evaluate` command moved to mars_trl.cli.evaluate.
    return moved_name(__name__, name, {"add_arguments": "mars_trl.cli.evaluate", "run": "mars_trl.cli.evaluate"})
