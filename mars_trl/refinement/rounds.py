"""One self-refinement round: allocate the budget by margin, generate (once per pair) and draw variants, tokenize them as
RewardTrainer prepares data, and append them to the pool with their provenance."""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np
from accelerate.utils import gather_object
from datasets import Dataset

from ..data.preparation import prepare_as_reward_trainer
from ..names import ROUND, SOURCE, TEXT_COLUMNS, TOKEN_COLUMNS, VARIANT
from ..sampling.allocation import allocate, draw_variants
from ..sampling.scoring import dataset_fetch, pair_lengths, score_margins
from .checkpoint import POOL_FILE, VARIANTS_FILE
from .pool import PairPool
from .variant_cache import VariantCache

logger = logging.getLogger(__name__)



class AugmenterFailure(RuntimeError):
    """Raised with `augment_on_error='raise'` when the augmenter fails or returns unusable variants."""


class Refiner:
    """
    Runs the augmentation rounds of one training run and owns what they produce (the variant cache; the pool grows).

    `raw` is the training set as the user gave it (text, any format) and `raw_rows[i]` the raw row of labelled pair
    `i` (preparation may drop rows, so the two differ).
    """

    def __init__(self, trainer, augmenter, pool: PairPool, raw: Dataset, raw_rows: np.ndarray):
        from ..augment import as_augmenter

        self.trainer = trainer
        self.mars = trainer.mars_args
        self.augmenter = as_augmenter(augmenter)
        self.pool = pool
        self.raw = raw
        self.raw_rows = raw_rows
        self.cache = VariantCache()
        self.reports: list[dict] = []
        self.last_counts: np.ndarray | None = None
        # Optional semantic layer (MARS v2): rewrites a pair once, before its variants are generated. Any object with
        # `sharpen(pairs: list[dict]) -> (pairs, counts: dict)`; its results are cached here and saved with the pool.
        self.sharpener = None
        self.sharpened: dict[int, dict] = {}

    @property
    def name(self) -> str:
        return getattr(self.augmenter, "name", type(self.augmenter).__name__)

    @property
    def variants_per_pair(self) -> int:
        return int(self.mars.augment_variants_per_pair or getattr(self.augmenter, "variants_per_pair", 25))

    def check_budgets(self, budgets) -> None:
        """Refuse, before training starts, a round budget the variant pools cannot fill without repeats."""
        supply = self.pool.num_labelled * self.variants_per_pair
        largest = max(budgets, default=0)
        if largest > supply:
            raise ValueError(
                f"An augmentation round's budget ({largest} pairs: the run's budget split over {len(budgets)} rounds) "
                f"exceeds what the variant pools can supply without replacement ({self.pool.num_labelled} labelled "
                f"pairs x {self.variants_per_pair} variants = {supply}). Lower `augment_budget` / "
                "`augment_budget_ratio`, train more epochs (more rounds), or raise `augment_variants_per_pair`."
            )
        cap = self.mars.augment_max_per_pair
        if cap is not None and largest > cap * self.pool.num_labelled:
            raise ValueError(
                f"An augmentation round's budget ({largest} pairs: the run's budget split over {len(budgets)} rounds) "
                f"exceeds what `augment_max_per_pair={cap}` allows over {self.pool.num_labelled} labelled pairs "
                f"({cap * self.pool.num_labelled}). Raise `augment_max_per_pair` to at least "
                f"{-(-largest // self.pool.num_labelled)}, lower `augment_budget` / `augment_budget_ratio`, or train "
                "more epochs (more rounds)."
            )

    def raw_pair(self, source: int) -> dict:
        row = self.raw[int(self.raw_rows[source])]
        return {k: row[k] for k in TEXT_COLUMNS if k in row}

    def source_pair(self, source: int) -> dict:
        """The pair the augmenter rewrites: the sharpened one when the semantic layer rewrote it, else the original."""
        return self.sharpened.get(int(source)) or self.raw_pair(source)

    def sharpen(self, sources: list[int], counts: Counter) -> None:
        """Run the semantic layer once for the `sources` not yet seen, sharded across processes and gathered."""
        todo = [s for s in sources if s not in self.sharpened]
        if self.sharpener is None or not todo:
            return
        accelerator = self.trainer.accelerator
        mine = todo[accelerator.process_index :: accelerator.num_processes]
        pairs, local_counts = self.sharpener.sharpen([self.raw_pair(s) for s in mine]) if mine else ([], {})
        parts = [(dict(zip(mine, pairs)), dict(local_counts))]
        if accelerator.num_processes > 1:
            parts = gather_object(parts)
        for results, part_counts in parts:
            self.sharpened.update({int(k): v for k, v in results.items()})
            counts.update({f"semantic_{k}": v for k, v in part_counts.items()})

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(self, sources: list[int]) -> Counter:
        """Fill the cache for `sources`, sharded across processes; every process ends with the same cache."""
        from ..augment import validate_variants

        accelerator = self.trainer.accelerator
        mine = sources[accelerator.process_index :: accelerator.num_processes]
        results: dict[int, list[dict]] = {}
        counts: Counter = Counter()
        error = None
        k = self.variants_per_pair
        size = self.mars.augment_batch_size
        for start in range(0, len(mine), size):
            batch = mine[start : start + size]
            pairs = [self.source_pair(s) for s in batch]
            try:
                outputs = self.augmenter.augment(pairs, k)
                if not isinstance(outputs, list) or len(outputs) != len(pairs):
                    got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
                    raise TypeError(
                        f"returned {got} results for {len(pairs)} pairs; expected a list with one per pair"
                    )
            except Exception as err:  # noqa: BLE001 -- any augmenter failure is counted, or re-raised on request
                counts["augmenter_failures"] += len(batch)
                shown = ", ".join(map(str, batch[:5])) + (", ..." if len(batch) > 5 else "")
                message = f"Augmenter {self.name!r} failed on {len(batch)} pairs (ids {shown}): {err}"
                if self.mars.augment_on_error == "raise":
                    error = message
                    break
                logger.warning(message + " (skipped; set augment_on_error='raise' to stop instead)")
                continue
            for source, pair, variants in zip(batch, pairs, outputs):
                ok, problems = validate_variants(pair, variants, k)
                counts["variants_generated"] += len(ok)
                counts["variants_invalid"] += len(problems)
                if problems and self.mars.augment_on_error == "raise":
                    error = f"Augmenter {self.name!r} returned unusable variants for pair {source}: {problems[:3]}"
                results[source] = ok
            if error:
                break
        if accelerator.num_processes > 1:
            gathered = gather_object([(results, dict(counts), error)])
        else:
            gathered = [(results, dict(counts), error)]
        counts = Counter()
        errors = []
        for part_results, part_counts, part_error in gathered:
            for source, variants in part_results.items():
                self.cache.add(source, variants)
            counts.update(part_counts)
            if part_error:
                errors.append(part_error)
        if errors:
            raise AugmenterFailure(errors[0] + " (augment_on_error='raise')")
        return counts

    # -- tokenization --------------------------------------------------------------------------------------------
    def tokenize(self, keys: list[tuple[int, int]], round_id: int) -> dict[tuple[int, int], dict]:
        """Tokenized rows of cached variants `(source, variant)`, exactly as RewardTrainer prepares data."""
        if not keys:
            return {}
        extra = [c for c in self.raw.column_names if c not in TEXT_COLUMNS and c in self.pool.extra_columns]
        rows = []
        for source, variant in keys:
            raw_row = self.raw[int(self.raw_rows[source])]
            row = {c: raw_row[c] for c in extra}
            row.update(self.cache[source][variant])
            row.update({SOURCE: source, VARIANT: variant, ROUND: round_id})
            rows.append(row)
        prepared = prepare_as_reward_trainer(
            Dataset.from_list(rows), None, None, name="augmented", trainer=self.trainer
        )
        keep = [*TOKEN_COLUMNS, *self.pool.extra_columns, SOURCE, VARIANT, ROUND]
        prepared = prepared.select_columns([c for c in keep if c in prepared.column_names])
        return {(r[SOURCE], r[VARIANT]): r for r in prepared}

    # -- the round -----------------------------------------------------------------------------------------------
    def run(self, epoch: int, labelled_margins: np.ndarray, budget: int) -> tuple[range, dict]:
        """One round at the start of `epoch`: allocate `budget` pairs by `labelled_margins` and add them."""
        start = time.perf_counter()
        round_id = len(self.reports) + 1
        seed = self.trainer.args.seed
        strategy = self.mars.augment_strategy
        # Pairs with a non-finite margin get no budget (`margin_nonfinite`); the rest share all of it.
        finite = np.isfinite(labelled_margins)
        counts = np.zeros(labelled_margins.size, dtype=np.int64)
        settings = dict(
            tau=self.mars.margin_tau,
            mode=self.mars.margin_mode,
            seed=seed + round_id,
            standardize=self.mars.margin_standardize,
            max_per_pair=self.mars.augment_max_per_pair,
        )
        weighted = self.mars.semantic_distance_weighting and strategy == "mars" and self.sharpener is not None
        if finite.any() and weighted:
            from ..semantic.weighting import allocate_with_distances

            # Beyond the paper (off by default): softmax(-tau * D) * w(d), d the pairs' semantic distances.
            distances = getattr(self.sharpener, "distances", None)
            counts[finite] = allocate_with_distances(
                labelled_margins[finite],
                None if distances is None else np.asarray(distances)[finite],
                budget,
                beta=self.mars.semantic_distance_beta,
                **settings,
            )
        elif finite.any():
            counts[finite] = allocate(strategy, labelled_margins[finite], budget, **settings)
        self.last_counts = counts
        sources = np.flatnonzero(counts > 0).tolist()
        reused = [s for s in sources if s in self.cache]
        fresh = [s for s in sources if s not in self.cache]
        semantic = Counter()
        self.sharpen(fresh, semantic)
        stats = self.generate(fresh)
        generation_seconds = time.perf_counter() - start

        # Pairs whose generation failed (not cached) or produced nothing usable leave their budget unfilled.
        ready = [s for s in sources if s in self.cache and self.cache[s]]
        if strategy == "west_of_n":
            candidates = [(s, v) for s in ready for v in range(len(self.cache[s]))]
            tokens = self.tokenize(candidates, round_id)
            draws = self._west_of_n(counts, ready, tokens)
        else:
            draws = []
            for s in ready:
                rng = np.random.default_rng(np.random.SeedSequence([seed, round_id, s]))
                draws += [(s, int(v)) for v in draw_variants(len(self.cache[s]), int(counts[s]), rng)]
            tokens = self.tokenize(sorted(set(draws)), round_id)
        rows = [tokens[key] for key in draws if key in tokens]
        considered = candidates if strategy == "west_of_n" else draws
        unfilled = int(budget - sum(counts[s] for s in ready))
        new = self.pool.append(rows)

        from ..semantic.sharpener import semantic_report

        hardest = np.argsort(labelled_margins, kind="stable")[:10]
        report = {
            "round": round_id,
            "epoch": epoch,
            "augmenter": self.name,
            "strategy": strategy,
            "budget": budget,
            "pairs_with_budget": len(sources),
            "most_to_one_pair": int(counts.max(initial=0)),
            "variants_generated": int(stats["variants_generated"]),
            "variants_reused_pairs": len(reused),
            "variants_invalid": int(stats["variants_invalid"]),
            "augmenter_failures": int(stats["augmenter_failures"]),
            # Budget lost to variants over `max_length` (each repeat of such a variant counts), so that
            # added + dropped_max_length + budget_unfilled = budget; and how many distinct variants that was.
            "dropped_max_length": int(sum(counts[s] for s in ready)) - len(rows),
            "variants_over_max_length": len({k for k in considered if k not in tokens}),
            "budget_unfilled": unfilled,
            "added": len(new),
            "pool_size": len(self.pool),
            "generation_seconds": generation_seconds,
            "seconds": time.perf_counter() - start,
            **semantic_report(semantic),  # counts summed over processes; floats kept, sums made means
            "hardest_pairs": hardest.tolist(),
            "hardest_margins": labelled_margins[hardest].tolist(),
        }
        acceptance = getattr(self.augmenter, "acceptance_rate", None)
        if callable(acceptance):  # the meaning filter's share of paraphrases kept, over the run so far
            report["paraphrase_acceptance"] = acceptance()
        self.reports.append(report)
        return new, report

    def _west_of_n(self, counts, sources, tokens) -> list[tuple[int, int]]:
        """Each pair's highest-margin variants under the current model (the opposite of MARS's choice)."""
        keys = sorted(tokens)
        if not keys:
            return []
        dataset = Dataset.from_list(
            [{"chosen_ids": tokens[k]["chosen_ids"], "rejected_ids": tokens[k]["rejected_ids"]} for k in keys]
        )
        result = score_margins(
            fetch=dataset_fetch(dataset),
            indices=np.arange(len(keys)),
            lengths=pair_lengths(dataset),
            description="MARS: scoring West-of-N candidates",
            require_finite=self.mars.margin_nonfinite == "raise",
            **self.trainer.scoring_arguments(),
        )
        by_source: dict[int, list[tuple[float, int]]] = {}
        for (s, v), m in zip(keys, result.margins):
            # A candidate scored NaN/inf ranks after every finite one (`margin_nonfinite='uniform'`), as labelled
            # pairs with such margins get no budget: it is drawn only once a pair's finite candidates run out.
            by_source.setdefault(s, []).append((-m if np.isfinite(m) else np.inf, v))
        draws = []
        for s in sources:
            ranked = [v for _, v in sorted(by_source.get(s, []))]
            if ranked:
                draws += [(s, ranked[i % len(ranked)]) for i in range(int(counts[s]))]
        return draws

    # -- state ---------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every round: an empty pool of variants, no reports, no cached variants or rewrites."""
        self.pool.reset()
        self.cache = VariantCache()
        self.reports, self.last_counts, self.sharpened = [], None, {}

    def state(self) -> tuple[dict, dict[str, bytes]]:
        scalars = {
            "reports": self.reports,
            "segment_sizes": self.pool.segment_sizes(),
            "sharpened": {str(k): v for k, v in sorted(self.sharpened.items())},
        }
        files = {POOL_FILE: self.pool.to_jsonl(), VARIANTS_FILE: self.cache.to_jsonl()}
        return scalars, files

    def load(self, scalars: dict, files: dict[str, bytes]) -> None:
        self.reports = list(scalars["reports"])
        self.sharpened = {int(k): v for k, v in scalars.get("sharpened", {}).items()}
        self.cache.load_jsonl(files[VARIANTS_FILE])
        self.pool.load_jsonl(files[POOL_FILE], scalars["segment_sizes"])
