r"""Preference metrics of margins: accuracy, ROC-AUC, reward AUC, margin SNR and calibration error, overall and per subset.

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
"""

from __future__ import annotations

import math

import numpy as np


def as_margins(margins) -> np.ndarray:
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
    m = as_margins(margins)
    return binary_auc(m, -m)


def pairwise_accuracy(margins) -> float:
    """Share of pairs with D > 0, a tie (D == 0) counting half."""
    m = as_margins(margins)
    if m.size == 0:
        return float("nan")
    return float((m > 0).mean() + 0.5 * (m == 0).mean())


def margin_snr(margins) -> float:
    """Mean over (population) standard deviation of the margins; +-inf when all margins are equal and non-zero."""
    m = as_margins(margins)
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
    m = as_margins(margins)
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
    m = as_margins(margins)
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


# Two-sided 97.5% quantiles of Student's t for 1..9 degrees of freedom (a 95% interval from few seeds).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)


def paired_difference(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of the per-seed differences `b - a`, its standard error and a 95% Student-t interval (nan: 1 seed)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    mean = float(d.mean())
    if d.size < 2:
        return {"mean": mean, "se": float("nan"), "low": float("nan"), "high": float("nan"), "seeds": int(d.size)}
    se = float(d.std(ddof=1) / np.sqrt(d.size))
    t = T975[min(d.size - 2, len(T975) - 1)]
    return {"mean": mean, "se": se, "low": mean - t * se, "high": mean + t * se, "seeds": int(d.size)}
