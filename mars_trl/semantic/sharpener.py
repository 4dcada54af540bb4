"""[`SemanticSharpener`]: the MARS v2 layer that rewrites semantically close pairs before they are augmented, and the
summaries it reports."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.fields import pair_core
from ..names import DEFAULT_EMBEDDER
from .embedder import Embedder
from .prompts import RewriteRequest, echoes_request
from .rewriters import as_rewriter
from .text import last_response_text, prompt_text, replace_response, response_text, text_digest

logger = logging.getLogger(__name__)


#: Sampling temperatures of the rewriter, as the authors: the rejected response first, then the chosen one.
REJECTED_TEMPERATURE = 0.9


CHOSEN_TEMPERATURE = 0.8


def describe(distances: Sequence[float]) -> dict[str, float]:
    """
    Summary of a distance distribution: count, mean, std, min, 10th/50th/90th percentiles, max.

    >>> from mars_trl.semantic import describe
    >>> describe([0.1, 0.2, 0.3])["mean"]
    0.2
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.size == 0:
        return {"count": 0}
    p10, p50, p90 = np.percentile(d, [10, 50, 90])
    return {
        "count": int(d.size),
        "mean": round(float(d.mean()), 6),
        "std": round(float(d.std()), 6),
        "min": round(float(d.min()), 6),
        "p10": round(float(p10), 6),
        "p50": round(float(p50), 6),
        "p90": round(float(p90), 6),
        "max": round(float(d.max()), 6),
    }


class SemanticSharpener:
    r"""
    The MARS v2 semantic layer: rewrite pairs whose responses are semantically close before they are augmented.

    `fit(pairs)` measures every labelled pair once and fixes the threshold (the mean distance, as the authors, unless
    `threshold` is given). `sharpen(pairs)` then, for each pair below the threshold, asks the rewriter to rewrite the
    rejected response (up to `max_attempts` tries at `rejected_temperature`), and for pairs where no try helped, the
    chosen response (`chosen_temperature`). A rewrite is kept only if it is non-empty, differs from the original, does
    not echo the request's own labels ("better response", "worse response", "rewrite this"; [`echoes_request`]) and
    increases the distance by more than `min_gain`; otherwise the pair keeps its original text. The echo check is
    ours, not the authors': a weak rewriter that repeats its instructions moves a pair apart too, and the distance
    rule alone would keep it. It is the object the
    trainer plugs in as `Refiner.sharpener` (built from the `semantic_*` settings of [`MarsArguments`], or passed as
    `MarsRewardTrainer(sharpener=...)`); the augmentation rounds' `Refiner` calls `sharpen` once per labelled pair and checkpoints the result.

    Args:
        embedder: an [`Embedder`], or what `Embedder(model)` accepts (id/path, SentenceTransformer, function);
            default: the authors' `sentence-transformers/all-mpnet-base-v2`.
        rewriter: a [`Rewriter`] ([`TransformersRewriter`], [`OpenAIRewriter`]), a function
            `fn(requests, temperature) -> list[str | None]`, or None to measure distances only (nothing is rewritten).
        threshold: pairs with a distance strictly below it are rewritten; None: the mean over the pairs given to `fit`.
        max_attempts: tries per side.
        rejected_temperature: sampling temperature of the rejected side's rewrites (0.9, as the authors).
        chosen_temperature: sampling temperature of the chosen side's rewrites (0.8, as the authors).
        min_gain: the distance must grow by more than this for a rewrite to be kept.
        show_progress: progress bars.

    `sharpen` returns the pairs (only their "prompt", "chosen", "rejected" keys) and counts: `pairs`,
    `below_threshold`, `refined` (a rewrite kept; `refined_rejected` + `refined_chosen`), `kept` (not sent to the
    rewriter: at or above the threshold, or no rewriter), `failed` (sent, but no rewrite was kept), `skipped` (a
    response without text), `rewrite_attempts`, `rewrites_discarded` (empty, unchanged, echoing or not farther),
    `rewrites_echoing` (of those discarded, the ones that echoed the request), `rewriter_errors` (requests that failed
    or timed out), `seconds`, and `distance_sum_before`/`distance_sum_after`
    (sums, so counts from several processes add up; [`semantic_report`] turns them into means). `refined + kept +
    failed + skipped == pairs`.
    """

    name = "semantic"

    def __init__(
        self,
        embedder: Any = None,
        rewriter: Any = None,
        *,
        threshold: float | None = None,
        max_attempts: int = 3,
        rejected_temperature: float = REJECTED_TEMPERATURE,
        chosen_temperature: float = CHOSEN_TEMPERATURE,
        min_gain: float = 0.0,
        show_progress: bool = True,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 2.0):
            raise ValueError(f"threshold must lie in [0, 2] (a cosine distance) or be None, got {threshold!r}")
        if isinstance(embedder, Embedder):
            self.embedder = embedder
        else:
            self.embedder = Embedder(DEFAULT_EMBEDDER if embedder is None else embedder, show_progress=show_progress)
        self.rewriter = as_rewriter(rewriter)
        self.threshold = threshold
        self.max_attempts = int(max_attempts)
        self.rejected_temperature = float(rejected_temperature)
        self.chosen_temperature = float(chosen_temperature)
        self.min_gain = float(min_gain)
        self.show_progress = show_progress
        #: Distances of the pairs given to `fit`, in their order (the labelled set, for the trainer).
        self.distances: np.ndarray | None = None
        #: The threshold in use: `threshold`, or the mean distance found by `fit`.
        self.threshold_: float | None = threshold
        #: One entry per `sharpen` call: counts and the distance distribution before and after.
        self.history: list[dict] = []
        self.fit_summary: dict | None = None
        self._pair_distance: dict[bytes, float] = {}

    def __repr__(self) -> str:
        return (
            f"SemanticSharpener(embedder={self.embedder!r}, rewriter={self.rewriter!r}, threshold={self.threshold_})"
        )

    # -- distances -----------------------------------------------------------------------------------------------
    def pair_distances(self, pairs: Sequence[Mapping]) -> np.ndarray:
        """Distance between the chosen and rejected response of each pair (cached per pair and per text)."""
        chosen = [response_text(p, "chosen") for p in pairs]
        rejected = [response_text(p, "rejected") for p in pairs]
        keys = [text_digest(c, r) for c, r in zip(chosen, rejected)]
        todo = [i for i, key in enumerate(keys) if key not in self._pair_distance]
        if todo:
            values = self.embedder.distances([chosen[i] for i in todo], [rejected[i] for i in todo])
            for i, value in zip(todo, values):
                self._pair_distance[keys[i]] = float(value)
        return np.array([self._pair_distance[key] for key in keys], dtype=np.float64)

    def fit(self, pairs: Sequence[Mapping], accelerator: Any = None) -> np.ndarray:
        """
        Measure every pair (the whole labelled set) once, and set the threshold to their mean distance unless one was
        given. With an `accelerator` running several processes, each embeds a shard and the distances are gathered,
        so every process ends with the same values (and the same threshold).
        """
        start = time.perf_counter()
        pairs = list(pairs)
        processes = getattr(accelerator, "num_processes", 1) if accelerator is not None else 1
        if processes > 1:
            from accelerate.utils import gather_object

            rank = accelerator.process_index
            mine = list(range(rank, len(pairs), processes))
            local = self.pair_distances([pairs[i] for i in mine]).tolist()
            distances = np.zeros(len(pairs), dtype=np.float64)
            for indices, values in gather_object([(mine, local)]):
                distances[indices] = values
            for pair, value in zip(pairs, distances):
                self._pair_distance[text_digest(response_text(pair, "chosen"), response_text(pair, "rejected"))] = (
                    float(value)
                )
        else:
            distances = self.pair_distances(pairs)
        self.distances = distances
        if self.threshold is None:
            self.threshold_ = float(distances.mean()) if distances.size else None
        self.fit_summary = {
            **describe(distances),
            "threshold": self.threshold_,
            "below_threshold": int((distances < self.threshold_).sum()) if self.threshold_ is not None else 0,
            "seconds": round(time.perf_counter() - start, 3),
        }
        logger.info(f"MARS semantic: distances of the labelled set {self.fit_summary}")
        return distances

    # -- rewriting ------------------------------------------------------------------------------------------------
    def _threshold_for(self, distances: np.ndarray) -> float:
        if self.threshold_ is not None:
            return self.threshold_
        logger.warning(
            "SemanticSharpener.sharpen was called before fit(): the threshold is the mean distance of this batch, "
            "not of the labelled set. Call fit(all labelled pairs) first."
        )
        return float(distances.mean()) if distances.size else 0.0

    def _call_rewriter(self, requests: list[RewriteRequest], temperature: float) -> tuple[list[str | None], str]:
        try:
            outputs = self.rewriter.rewrite(requests, temperature)
            if not isinstance(outputs, (list, tuple)) or len(outputs) != len(requests):
                got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
                raise TypeError(f"the rewriter returned {got} results for {len(requests)} requests")
            outputs = [o if isinstance(o, str) else None for o in outputs]
        except Exception as err:  # noqa: BLE001 -- a failed call fails its requests; the pairs keep their text
            return [None] * len(requests), f"{type(err).__name__}: {err}"[:300]
        return outputs, ""

    def sharpen(self, pairs: Sequence[Mapping]) -> tuple[list[dict], dict[str, float]]:
        """Refine `pairs` (see the class docstring); returns the pairs, in order, and the counts."""
        start = time.perf_counter()
        pairs = [pair_core(p) for p in pairs]
        n = len(pairs)
        out = [dict(p) for p in pairs]
        counts = dict.fromkeys(
            (
                "pairs",
                "below_threshold",
                "refined",
                "refined_rejected",
                "refined_chosen",
                "kept",
                "failed",
                "skipped",
                "rewrite_attempts",
                "rewrites_discarded",
                "rewrites_echoing",
                "rewriter_errors",
            ),
            0,
        )
        counts["pairs"] = n
        if not n:
            return out, {**counts, "seconds": 0.0, "distance_sum_before": 0.0, "distance_sum_after": 0.0}
        text = {side: [response_text(p, side) for p in pairs] for side in ("chosen", "rejected")}
        usable = np.array([bool(c.strip()) and bool(r.strip()) for c, r in zip(text["chosen"], text["rejected"])])
        before = self.pair_distances(pairs)
        after = before.copy()
        threshold = self._threshold_for(before)
        below = usable & (before < threshold)
        counts["below_threshold"] = int(below.sum())
        counts["skipped"] = int((~usable).sum())
        pending = np.flatnonzero(below).tolist() if self.rewriter is not None else []
        counts["kept"] = int(usable.sum()) - len(pending)
        prompts = {i: prompt_text(pairs[i]) for i in pending}
        failure = ""
        for side, temperature in (("rejected", self.rejected_temperature), ("chosen", self.chosen_temperature)):
            other = "chosen" if side == "rejected" else "rejected"
            active = list(pending)
            for _ in range(self.max_attempts):
                if not active or failure:
                    break
                requests = [
                    RewriteRequest(side, last_response_text(pairs[i], side), text[other][i], prompts[i])
                    for i in active
                ]
                outputs, error = self._call_rewriter(requests, temperature)
                counts["rewrite_attempts"] += len(requests)
                counts["rewriter_errors"] += sum(o is None for o in outputs)
                if all(o is None for o in outputs):
                    # The whole call failed (the model crashed, the endpoint is down): stop for this batch.
                    failure = error or "every request failed or timed out"
                    break
                candidates = []
                for i, request, output in zip(active, requests, outputs):
                    if output is None:
                        continue
                    original = request.response
                    if not output.strip() or output.strip() == original.strip():
                        counts["rewrites_discarded"] += 1
                        continue
                    if echoes_request(output, original):
                        counts["rewrites_discarded"] += 1
                        counts["rewrites_echoing"] += 1
                        continue
                    candidates.append((i, replace_response(pairs[i], side, output)))
                accepted = set()
                if candidates:
                    new = self.pair_distances([pair for _, pair in candidates])
                    for (i, pair), distance in zip(candidates, new):
                        if distance > before[i] + self.min_gain:
                            out[i], after[i] = pair, distance
                            counts["refined"] += 1
                            counts[f"refined_{side}"] += 1
                            accepted.add(i)
                        else:
                            counts["rewrites_discarded"] += 1
                active = [i for i in active if i not in accepted]
                pending = [i for i in pending if i not in accepted]
        counts["failed"] = len(pending)
        if failure:
            logger.warning(
                f"MARS semantic: the rewriter {getattr(self.rewriter, 'name', '')!r} failed ({failure}); "
                f"{len(pending)} pairs keep their original text."
            )
        seconds = time.perf_counter() - start
        entry = {
            **counts,
            "seconds": round(seconds, 3),
            "threshold": threshold,
            "before": describe(before),
            "after": describe(after),
        }
        self.history.append(entry)
        logger.info(
            f"MARS semantic: {n} pairs, {counts['refined']} refined, {counts['kept']} kept, {counts['failed']} "
            f"failed, {counts['skipped']} skipped in {seconds:.1f}s; distance before {entry['before']}, "
            f"after {entry['after']}"
        )
        return out, {
            **counts,
            "seconds": seconds,
            "distance_sum_before": float(before.sum()),
            "distance_sum_after": float(after.sum()),
        }

    __call__ = sharpen


def semantic_report(counts: Mapping[str, float], prefix: str = "semantic_") -> dict[str, float]:
    r"""
    The round-report fields of the semantic layer's counts (summed over processes, keys prefixed with `prefix`):
    whole numbers stay integers, seconds stay float, and the distance sums become the means before and after
    refinement over the round's newly rewritten pairs.

    Example:

    ```python
    >>> from mars_trl.semantic import semantic_report
    >>> semantic_report({"semantic_pairs": 4, "semantic_refined": 1, "semantic_seconds": 0.25,
    ...                  "semantic_distance_sum_before": 0.4, "semantic_distance_sum_after": 0.6})
    {'semantic_pairs': 4, 'semantic_refined': 1, 'semantic_seconds': 0.25, 'semantic_distance_mean_before': 0.1, 'semantic_distance_mean_after': 0.15}
    ```
    """
    out: dict[str, float] = {}
    for key, value in counts.items():
        if key.startswith(f"{prefix}distance_sum_"):
            continue
        out[key] = round(float(value), 6) if isinstance(value, float) else int(value)
    pairs = counts.get(f"{prefix}pairs", 0)
    for when in ("before", "after"):
        total = counts.get(f"{prefix}distance_sum_{when}")
        if total is not None and pairs:
            out[f"{prefix}distance_mean_{when}"] = round(float(total) / pairs, 6)
    return out
