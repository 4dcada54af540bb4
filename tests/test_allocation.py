"""Budget allocation: integer counts that sum to B exactly, deterministic, and shaped by the strategy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mars_trl.sampling.allocation import allocate, capped_largest_remainder, draw_variants, largest_remainder

margins = arrays(np.float64, st.integers(1, 300), elements=st.floats(-20, 20, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(margins, st.integers(0, 5000), st.sampled_from(["mars", "uniform", "west_of_n", "none"]), st.integers(0, 99))
def test_counts_sum_to_the_budget_and_are_deterministic(m, budget, strategy, seed):
    counts = allocate(strategy, m, budget, tau=0.5, seed=seed)
    assert counts.dtype == np.int64 and counts.shape == m.shape and np.all(counts >= 0)
    assert counts.sum() == (0 if strategy == "none" else budget)
    assert np.array_equal(counts, allocate(strategy, m, budget, tau=0.5, seed=seed))


@settings(max_examples=100, deadline=None)
@given(margins, st.integers(1, 5000))
def test_mars_gives_harder_pairs_at_least_as_much(m, budget):
    counts = allocate("mars", m, budget, tau=0.5, seed=0)
    order = np.argsort(m, kind="stable")
    # Largest remainder can differ by one unit between near-equal shares, never more.
    assert np.all(np.diff(counts[order]) <= 1)
    exact = np.exp(-0.5 * (m - m.min())) / np.exp(-0.5 * (m - m.min())).sum() * budget
    assert np.all(np.abs(counts - exact) < 1.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 500), st.integers(0, 5000), st.integers(0, 99))
def test_uniform_is_even(n, budget, seed):
    counts = allocate("uniform", np.zeros(n), budget, seed=seed)
    assert counts.max() - counts.min() <= 1


def test_ties_are_broken_by_the_seed_not_the_index():
    winners = {tuple(np.flatnonzero(largest_remainder(np.ones(10), 3, seed=s))) for s in range(20)}
    assert len(winners) > 1


def test_examples_and_errors():
    assert allocate("mars", np.array([-2.0, 0.0, 4.0]), 10).tolist() == [7, 3, 0]
    assert largest_remainder(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]
    with pytest.raises(ValueError, match="Unknown augmentation strategy"):
        allocate("best", np.zeros(3), 5)
    with pytest.raises(ValueError, match=">= 0"):
        largest_remainder(np.ones(3), -1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(0, 100), st.integers(0, 99))
def test_draws_use_every_variant_before_repeating(pool, count, seed):
    draws = draw_variants(pool, count, np.random.default_rng(seed))
    assert len(draws) == count and np.all((draws >= 0) & (draws < pool))
    first = draws[: min(pool, count)]
    assert len(set(first.tolist())) == len(first)


def test_standardize_makes_the_mars_allocation_scale_free():
    # A young reward head: margins of a few hundredths. softmax(-0.5 * D) is flat, so `mars` is `uniform`...
    margins = np.array([-0.03, -0.01, 0.0, 0.01, 0.02, 0.04])
    flat = allocate("mars", margins, 60, tau=0.5)
    assert flat.tolist() == allocate("uniform", margins, 60).tolist() == [10] * 6
    # ...standardised, the same margins allocate as margins 100x larger would, hardest first.
    scaled = allocate("mars", margins, 60, tau=0.5, standardize=True)
    assert scaled.sum() == 60 and scaled.tolist() == sorted(scaled.tolist(), reverse=True) and scaled[0] > scaled[-1]
    assert scaled.tolist() == allocate("mars", margins * 100, 60, tau=0.5, standardize=True).tolist()


@settings(max_examples=200, deadline=None)
@given(margins, st.integers(0, 3000), st.integers(0, 8), st.integers(0, 99))
def test_a_cap_bounds_every_count_and_keeps_the_rest_proportional(m, budget, slack, seed):
    cap = -(-budget // m.size) + slack  # the smallest cap that holds the budget, plus some room
    counts = allocate("mars", m, budget, tau=0.5, seed=seed, max_per_pair=cap)
    assert counts.sum() == budget and counts.max(initial=0) <= cap and np.all(counts >= 0)
    # Below the cap the allocation is still the softmax's: harder pairs get at least as much, up to rounding.
    order = np.argsort(m, kind="stable")
    assert np.all(np.diff(counts[order]) <= 1)
    # A cap nothing reaches changes nothing.
    assert np.array_equal(allocate("mars", m, budget, seed=seed, max_per_pair=budget + 1), allocate("mars", m, budget, seed=seed))


def test_a_cap_too_small_for_the_budget_names_the_fix():
    assert capped_largest_remainder(np.array([0.7, 0.2, 0.1]), 10, cap=4).tolist() == [4, 4, 2]
    with pytest.raises(ValueError, match=r"cap of 3 cannot hold a budget of 10 over 3 pairs.*at least 4"):
        allocate("uniform", np.zeros(3), 10, max_per_pair=3)
