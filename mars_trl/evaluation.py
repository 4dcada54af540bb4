r"""Held-out evaluation of a reward model: score preference pairs and summarise the margins.

Two pieces, usable on any reward model trained with `MarsRewardTrainer` or `trl.RewardTrainer`:

- [`score_pairs`] prepares preference data of any TRL format (standard or conversational, implicit or explicit
  prompt, or pre-tokenized `chosen_ids`/`rejected_ids`) exactly as `MarsRewardTrainer` prepares training data (chat
  template, eos handling, the `max_length` filter that drops longer pairs), then runs the model in eval mode with no
  gradient over length-sorted batches and returns the reward of each side of every pair that was kept;
- [`preference_metrics`] turns margins $D_i = r(x_i, y_i^+) - r(x_i, y_i^-)$ into pairwise accuracy, ROC-AUC,
  margin SNR and expected calibration error, overall and per subset.

The metrics, for margins $D_1, \dots, D_n$ and $p_i = \sigma(D_i)$, the model's probability that the chosen
response is preferred:

- **accuracy**: $\frac{1}{n}\sum_i [D_i > 0] + \tfrac12 [D_i = 0]$ (a tie counts half); `accuracy_se` is its
  binomial standard error $\sqrt{a(1-a)/n}$.
- **roc_auc** (pairwise formulation): every pair is shown in both orders, (chosen, rejected) with label 1 and score
  $\sigma(D_i)$, and (rejected, chosen) with label 0 and score $\sigma(-D_i)$. Since $\sigma$ is monotone this is
  $\frac{1}{n^2}\sum_{i,j} [D_i > -D_j] + \tfrac12 [D_i = -D_j]$: the probability that a randomly drawn pair's margin
  beats another's reversed margin. It rewards confident correct margins and penalises confident wrong ones, which
  plain accuracy does not see. 0.5 is chance, 1 means every margin is positive.
- **reward_auc** (only when the per-side rewards are given): ROC-AUC of the rewards themselves with labels
  chosen = 1, rejected = 0, pooled over all pairs (scores $[r^+_1..r^+_n, r^-_1..r^-_n]$, labels $[1..1, 0..0]$). It
  asks more: one threshold on the reward scale separating good from bad responses *across* prompts.
- **margin_snr**: mean / std of the margins (population std); large when margins are consistently positive.
- **ece**: expected calibration error of $\sigma(D)$ as a binary classifier of the order, in the top-label form:
  confidence $c_i = \sigma(|D_i|) \in [0.5, 1]$, correct when $D_i > 0$ (a tie counts half), `num_bins`
  equal-width bins over $[0.5, 1]$, $\mathrm{ECE} = \sum_b \frac{|b|}{n} |\mathrm{acc}(b) - \mathrm{conf}(b)|$.
  This is the same as the ECE over both orderings of every pair.

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

import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import datasets
import numpy as np
import torch
from datasets import Dataset
from trl import RewardTrainer

from .pool import dataset_fetch, pair_lengths
from .preparation import empty_eos, ensure_chat_template
from .scoring import score_margins

#: Column added to the data before preparation, so every kept pair knows its row in the data as given.
ROW_COLUMN = "eval_row"


@dataclass
class PairScores:
    """
    Rewards of the pairs that [`score_pairs`] kept, in the order of the input rows.

    `rows[k]` is the input row of pair `k` (pairs over `max_length` are dropped, exactly as in training, so `rows`
    can be shorter than the input); `subsets[k]` its subset label when the data had the subset column.
    """

    rewards_chosen: np.ndarray
    rewards_rejected: np.ndarray
    rows: np.ndarray
    num_input: int
    subsets: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def margins(self) -> np.ndarray:
        """D = r(chosen) - r(rejected) per kept pair."""
        return self.rewards_chosen - self.rewards_rejected

    @property
    def num_dropped(self) -> int:
        """Input pairs not scored: a side longer than `max_length` (RewardTrainer drops such pairs from training)."""
        return self.num_input - int(self.rows.size)

    def metrics(self, num_bins: int = 10) -> dict:
        """[`preference_metrics`] of these pairs (with reward AUC and a per-subset breakdown when available)."""
        out = preference_metrics(
            self.margins,
            subsets=self.subsets,
            rewards_chosen=self.rewards_chosen,
            rewards_rejected=self.rewards_rejected,
            num_bins=num_bins,
        )
        out["num_dropped"] = self.num_dropped
        return out


def prepare_pairs(
    dataset: Dataset | list[dict],
    tokenizer,
    max_length: int | None = None,
    dataset_num_proc: int | None = None,
    trainer=None,
    name: str = "evaluation",
) -> Dataset:
    """
    Tokenize preference data exactly as `MarsRewardTrainer` prepares it, keeping each pair's input row in the
    column `eval_row`.

    With `trainer` given, its own `_prepare_dataset` runs with its `processing_class` and `args` (so any subclass
    override applies). Otherwise the same steps run directly: `mars_trl.preparation.ensure_chat_template` (a plain
    template for conversational data on a tokenizer without one; note that it is set on `tokenizer`, as the trainer
    would), an empty eos for tokenizers without one, then TRL's `RewardTrainer._prepare_dataset` (eos appended to
    standard-format text, chat template applied to conversational data, prompt prepended, pairs with a side longer than
    `max_length` tokens removed).
    """
    if isinstance(dataset, list):
        dataset = Dataset.from_list(dataset)
    if ROW_COLUMN in dataset.column_names:
        raise ValueError(f"The dataset already has a column `{ROW_COLUMN}`, which score_pairs reserves: rename it.")
    if len(dataset) == 0:
        raise ValueError("Cannot score an empty dataset.")
    data = dataset.add_column(ROW_COLUMN, np.arange(len(dataset), dtype=np.int64))
    if trainer is not None:
        return trainer._prepare_dataset(data, trainer.processing_class, trainer.args, name)
    ensure_chat_template(data, tokenizer)
    args = SimpleNamespace(max_length=max_length, dataset_num_proc=dataset_num_proc)
    with empty_eos(tokenizer):
        # `_prepare_dataset` does not touch `self`; MarsRewardTrainer's override adds only the two steps above.
        return RewardTrainer._prepare_dataset(None, data, tokenizer, args, name)


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module,
    tokenizer,
    dataset: Dataset | list[dict],
    batch_size: int = 32,
    max_length: int | None = 1024,
    subset_column: str | None = "subset",
    device: str | torch.device | None = None,
    show_progress: bool = True,
    description: str = "Scoring pairs",
    trainer=None,
) -> PairScores:
    """
    Rewards of both sides of every preference pair in `dataset` under `model` (a sequence-classification reward
    model with one label), prepared exactly as `MarsRewardTrainer` prepares training data (see [`prepare_pairs`]).

    The pass is MARS's margin-scoring pass ([`score_margins`]): eval mode, no gradient, batches of `2 * batch_size`
    sequences sorted by length (longest first, so an out-of-memory shows up at once; less padding), a progress bar.
    The model's training mode is restored afterwards. `max_length` is the training filter: pairs with a side longer than it are dropped and counted
    in `num_dropped` (pass the training run's value, or None to keep every pair). With `trainer` given, its own data
    preparation, `max_length` and tokenizer are used. `subset_column` (default `"subset"`), when present, labels each
    pair for the per-subset breakdown of [`PairScores.metrics`].
    """
    start = time.perf_counter()
    num_input = len(dataset)
    if trainer is not None:
        tokenizer = trainer.processing_class
    bars_were_on = not datasets.are_progress_bars_disabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        prepared = prepare_pairs(dataset, tokenizer, max_length=max_length, trainer=trainer, name=description)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    plain = prepared.with_format(None)
    rows = np.asarray(plain[ROW_COLUMN], dtype=np.int64)
    subsets = None
    if subset_column and subset_column in plain.column_names:
        subsets = np.asarray([str(s) for s in plain[subset_column]], dtype=object)
    n = len(plain)
    rewards = np.zeros((n, 2), dtype=np.float64)
    if n:
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        rewards = score_margins(
            model,
            dataset_fetch(plain),
            np.arange(n),
            pair_lengths(plain),
            pad_token_id=pad_id,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            description=description,
            require_finite=False,  # the metrics name non-finite rewards
        ).rewards
    return PairScores(
        rewards_chosen=rewards[:, 0],
        rewards_rejected=rewards[:, 1],
        rows=rows,
        num_input=num_input,
        subsets=subsets,
        seconds=time.perf_counter() - start,
    )


# -- metrics ---------------------------------------------------------------------------------------------------------
def _as_margins(margins) -> np.ndarray:
    m = np.asarray(margins, dtype=np.float64).reshape(-1)
    if m.size and not np.all(np.isfinite(m)):
        raise ValueError(f"Margins must be finite; got {int((~np.isfinite(m)).sum())} non-finite values.")
    return m


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def binary_auc(positive_scores, negative_scores) -> float:
    """
    ROC-AUC = P(score of a positive > score of a negative), ties counting half (Mann-Whitney U with average ranks).

    Example:

    ```python
    >>> from mars_trl.evaluation import binary_auc
    >>> binary_auc([0.9, 0.8], [0.1, 0.8])
    0.875
    ```
    """
    pos = np.asarray(positive_scores, dtype=np.float64).reshape(-1)
    neg = np.asarray(negative_scores, dtype=np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average rank of each tie group
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def pairwise_auc(margins) -> float:
    """
    ROC-AUC of sigma(D) with each pair shown in both orders: scores D_i (label 1) against -D_j (label 0).

    Example:

    ```python
    >>> from mars_trl.evaluation import pairwise_auc
    >>> round(pairwise_auc([1.0, 2.0, -0.5]), 4)  # 8 of the 9 (D_i, -D_j) comparisons are won
    0.8889
    ```
    """
    m = _as_margins(margins)
    return binary_auc(m, -m)


def pairwise_accuracy(margins) -> float:
    """Share of pairs with D > 0, a tie (D == 0) counting half."""
    m = _as_margins(margins)
    if m.size == 0:
        return float("nan")
    return float((m > 0).mean() + 0.5 * (m == 0).mean())


def margin_snr(margins) -> float:
    """Mean over (population) standard deviation of the margins; +-inf when all margins are equal and non-zero."""
    m = _as_margins(margins)
    if m.size == 0:
        return float("nan")
    mean, std = float(m.mean()), float(m.std())
    if std > 0:
        return mean / std
    return math.copysign(math.inf, mean) if mean != 0 else float("nan")


def expected_calibration_error(margins, num_bins: int = 10) -> float:
    """
    Top-label ECE of sigma(D): confidence sigma(|D|) in [0.5, 1], correct when D > 0, `num_bins` equal bins.

    Example:

    ```python
    >>> import math
    >>> from mars_trl.evaluation import expected_calibration_error
    >>> round(expected_calibration_error([math.log(3)] * 4), 6)  # says 75% sure, is right every time
    0.25
    >>> round(expected_calibration_error([math.log(3)] * 3 + [-math.log(3)]), 6)  # 75% sure, right 3 times in 4
    0.0
    ```
    """
    m = _as_margins(margins)
    if m.size == 0:
        return float("nan")
    confidence = _sigmoid(np.abs(m))
    correct = (m > 0).astype(np.float64) + 0.5 * (m == 0)
    # Bin b covers [0.5 + b/(2B), 0.5 + (b+1)/(2B)); confidence 1.0 goes into the last bin.
    bins = np.clip(((confidence - 0.5) * 2 * num_bins).astype(np.int64), 0, num_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() / m.size * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def _summary(m: np.ndarray, chosen, rejected, num_bins: int) -> dict:
    acc = pairwise_accuracy(m)
    out = {
        "n": int(m.size),
        "accuracy": acc,
        "accuracy_se": float(math.sqrt(acc * (1 - acc) / m.size)) if m.size else float("nan"),
        "roc_auc": pairwise_auc(m),
        "margin_mean": float(m.mean()) if m.size else float("nan"),
        "margin_std": float(m.std()) if m.size else float("nan"),
        "margin_snr": margin_snr(m),
        "ece": expected_calibration_error(m, num_bins),
    }
    if chosen is not None and rejected is not None:
        out["reward_auc"] = binary_auc(chosen, rejected)
    return out


def preference_metrics(
    margins,
    subsets=None,
    rewards_chosen=None,
    rewards_rejected=None,
    num_bins: int = 10,
) -> dict:
    """
    Pairwise accuracy, ROC-AUC (pairwise formulation), margin SNR, mean/std margin and ECE of `margins`, with the
    reward AUC when both per-side rewards are given, and, when `subsets` labels each pair, the same figures per subset
    under `"subsets"` (sorted by name). The formulas are in the module docstring.

    Example:

    ```python
    >>> import numpy as np
    >>> from mars_trl.evaluation import preference_metrics
    >>> out = preference_metrics(np.array([2.0, 1.0, -1.0, 0.0]), subsets=["a", "a", "b", "b"])
    >>> out["accuracy"], out["subsets"]["a"]["accuracy"], out["subsets"]["b"]["accuracy"]
    (0.625, 1.0, 0.25)
    >>> round(out["margin_snr"], 4)  # mean 0.5 / std 1.118
    0.4472
    ```
    """
    m = _as_margins(margins)
    chosen = rejected = None
    if rewards_chosen is not None and rewards_rejected is not None:
        chosen = np.asarray(rewards_chosen, dtype=np.float64).reshape(-1)
        rejected = np.asarray(rewards_rejected, dtype=np.float64).reshape(-1)
        if chosen.shape != m.shape or rejected.shape != m.shape:
            raise ValueError(f"Got {m.size} margins but {chosen.size} chosen and {rejected.size} rejected rewards.")
    out = _summary(m, chosen, rejected, num_bins)
    if subsets is not None:
        labels = np.asarray([str(s) for s in subsets], dtype=object)
        if labels.size != m.size:
            raise ValueError(f"Got {m.size} margins but {labels.size} subset labels.")
        out["subsets"] = {}
        for name in sorted(set(labels.tolist())):
            mask = labels == name
            out["subsets"][name] = _summary(
                m[mask],
                None if chosen is None else chosen[mask],
                None if rejected is None else rejected[mask],
                num_bins,
            )
    return out


# -- `mars-trl evaluate` ---------------------------------------------------------------------------------------------
_COLUMNS = ("n", "accuracy", "accuracy_se", "roc_auc", "reward_auc", "margin_mean", "margin_snr", "ece")


def format_metrics(metrics: dict) -> str:
    """A plain-text table of [`preference_metrics`] output: one row overall, then one per subset."""
    rows = [("all", metrics), *sorted(metrics.get("subsets", {}).items())]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{'':<{width}}" + "".join(f"{c:>12}" for c in _COLUMNS)]
    for name, values in rows:
        cells = []
        for column in _COLUMNS:
            value = values.get(column, float("nan"))
            cells.append(f"{value:>12d}" if column == "n" else f"{value:>12.4f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def add_arguments(parser):
    """The arguments of `mars-trl evaluate` (added to `parser`, which is returned)."""
    parser.add_argument(
        "--model_name_or_path",
        required=True,
        help="A reward model: a full checkpoint, or a LoRA/QLoRA adapter folder written by trainer.save_model().",
    )
    parser.add_argument(
        "--dataset_name",
        required=True,
        help="Preference pairs in any TRL format: a local .json/.jsonl/.parquet/.csv file (optionally .gz) or "
        "folder, or a Hub dataset id.",
    )
    parser.add_argument("--dataset_config", default=None, help="Hub dataset config name.")
    parser.add_argument("--split", default="test", help="Hub dataset split (default: test; local files: all rows).")
    parser.add_argument("--subset", default=None, help="Keep only rows whose `subset` column equals this.")
    parser.add_argument("--max_samples", type=int, default=None, help="Score at most this many pairs (the first).")
    parser.add_argument(
        "--max_length",
        type=int,
        default=1024,
        help="Drop pairs with a side longer than this many tokens, as training does (default 1024, RewardConfig's); "
        "0 keeps every pair.",
    )
    parser.add_argument("--batch_size", type=int, default=32, help="Pairs per forward pass (default 32).")
    parser.add_argument("--num_bins", type=int, default=10, help="Bins of the calibration error (default 10).")
    parser.add_argument(
        "--load_in_4bit", action="store_true", help="QLoRA adapter: load its base in 4-bit (NF4) as in training."
    )
    parser.add_argument("--output", default=None, help="Also write every figure, per subset, to this JSON file.")
    return parser


def run(args) -> dict:
    """`mars-trl evaluate`: score the pairs, print the metrics table, optionally write JSON; returns the metrics."""
    import json
    import os

    from transformers import AutoTokenizer

    from .loading import METADATA_COLUMNS, check_model_path, load_preference_dataset
    from .peft_utils import load_reward_model, qlora_config

    check_model_path(args.model_name_or_path)

    for name, minimum in (("batch_size", 1), ("num_bins", 1), ("max_length", 0)):
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {getattr(args, name)}.")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max_samples must be a positive number of pairs, got {args.max_samples}.")
    data = load_preference_dataset(
        args.dataset_name, args.dataset_config, split=args.split, subset=args.subset, drop_metadata=False
    )
    data = data.remove_columns([c for c in METADATA_COLUMNS if c in data.column_names])
    if args.max_samples is not None:
        data = data.select(range(min(args.max_samples, len(data))))
    model = load_reward_model(
        args.model_name_or_path, quantization_config=qlora_config() if args.load_in_4bit else None
    )
    if torch.cuda.is_available() and not args.load_in_4bit:
        model = model.to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    scores = score_pairs(model, tokenizer, data, batch_size=args.batch_size, max_length=args.max_length or None)
    if scores.rows.size == 0:
        raise ValueError(
            f"All {scores.num_input} pairs are longer than --max_length {args.max_length} tokens: raise --max_length."
        )
    metrics = scores.metrics(num_bins=args.num_bins)
    print(f"{args.model_name_or_path} on {args.dataset_name}: {scores.rows.size} pairs scored", end="")
    print(f", {scores.num_dropped} dropped (longer than --max_length {args.max_length})" if scores.num_dropped else "")
    print(format_metrics(metrics))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        report = {"model": args.model_name_or_path, "dataset": args.dataset_name, "metrics": metrics}
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2, allow_nan=True)
        print(f"Metrics written to {args.output}.")
    return metrics
