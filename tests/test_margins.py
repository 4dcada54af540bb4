"""The weight maths: softmax(-tau * D) mixed with a uniform floor, statistics, and the margin table."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mars_trl import MarsArguments, MarsConfig
from mars_trl.sampling.margins import (
    MarginTable,
    bt_curvature,
    margin_statistics,
    sampling_statistics,
    sampling_weights,
)

finite_margins = arrays(np.float64, st.integers(1, 200), elements=st.floats(-50, 50, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(
    finite_margins, st.floats(0.01, 5.0), st.floats(0.0, 1.0), st.sampled_from(["signed", "absolute"]), st.booleans()
)
def test_weights_are_a_distribution_with_the_floor(margins, tau, floor, mode, standardize):
    w = sampling_weights(margins, tau=tau, mode=mode, floor=floor, standardize=standardize)
    assert w.shape == margins.shape
    assert np.all(np.isfinite(w))
    assert w.sum() == pytest.approx(1.0, abs=1e-9)
    # No pair's weight goes below its share of the uniform floor.
    assert np.all(w >= floor / margins.size * (1 - 1e-9))
    if floor > 0:
        assert np.all(w > 0)


@settings(max_examples=100, deadline=None)
@given(finite_margins, st.floats(0.01, 5.0))
def test_signed_weights_are_monotone_in_the_margin(margins, tau):
    w = sampling_weights(margins, tau=tau, floor=0.1)
    order = np.argsort(margins, kind="stable")
    # Lower margin (harder, or mis-ranked) -> weight at least as large.
    assert np.all(np.diff(w[order]) <= 1e-12)


def test_signed_versus_absolute():
    m = np.array([-3.0, 0.0, 3.0])
    signed = sampling_weights(m, tau=1.0, floor=0.0, mode="signed")
    absolute = sampling_weights(m, tau=1.0, floor=0.0, mode="absolute")
    assert signed[0] > signed[1] > signed[2]  # mis-ranked first
    assert absolute[1] > absolute[0] == pytest.approx(absolute[2])  # nearest the boundary first
    expected = np.exp([3.0, 0.0, -3.0]) / np.exp([3.0, 0.0, -3.0]).sum()
    np.testing.assert_allclose(signed, expected)


def test_floor_one_is_uniform_and_standardize_is_scale_free():
    m = np.array([-1.0, 0.5, 2.0, 7.0])
    np.testing.assert_allclose(sampling_weights(m, floor=1.0), np.full(4, 0.25))
    np.testing.assert_allclose(
        sampling_weights(m, standardize=True), sampling_weights(100 * m + 3, standardize=True), rtol=1e-12
    )
    np.testing.assert_allclose(sampling_weights(np.zeros(5), standardize=True), np.full(5, 0.2))


def test_non_finite_margins_name_the_pair():
    with pytest.raises(ValueError, match=r"Margin of pair 2 is nan"):
        sampling_weights(np.array([0.0, 1.0, np.nan, np.inf]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        sampling_weights(np.array([]))


def test_statistics():
    m = np.array([-1.0, 0.0, 1.0, 2.0])
    w = sampling_weights(m, tau=0.5, floor=0.1)
    stats = margin_statistics(m, w)
    assert stats["misranked_fraction"] == 0.25
    assert stats["margin_mean"] == pytest.approx(0.5)
    assert stats["margin_median"] == pytest.approx(0.5)
    assert 1.0 <= stats["ess"] <= 4.0
    assert stats["ess_fraction"] == pytest.approx(stats["ess"] / 4)
    # The sampled distribution leans to low |D| here, where sigma'(D) is largest.
    assert stats["curvature_ratio"] > 1.0
    assert bt_curvature(np.array([0.0]))[0] == pytest.approx(0.25)
    uniform = margin_statistics(m, np.full(4, 0.25))
    assert uniform["ess"] == pytest.approx(4.0) and uniform["curvature_ratio"] == pytest.approx(1.0)


def test_margin_table_staleness_resize_and_state():
    table = MarginTable(5)
    table.update([0, 1], [0.2, -0.3], epoch=1)
    table.update([2], [1.0], epoch=3)
    assert table.stale(epoch=3, max_age=1).tolist() == [0, 1, 3, 4]
    assert table.stale(epoch=3, max_age=2).tolist() == [3, 4]
    table.resize(7)
    assert len(table) == 7 and table.stale(epoch=3, max_age=5).tolist() == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="never shrinks"):
        table.resize(2)
    clone = MarginTable(1)
    clone.load_state_dict(table.state_dict())
    np.testing.assert_array_equal(clone.values, table.values)
    np.testing.assert_array_equal(clone.epoch, table.epoch)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("margin_tau", 0.0, "margin_tau"),
        ("margin_tau", -1.0, "margin_tau"),
        ("margin_tau", float("nan"), "margin_tau"),
        ("margin_uniform_floor", 1.5, "margin_uniform_floor"),
        ("margin_uniform_floor", -0.1, "margin_uniform_floor"),
        ("margin_mode", "abs", "margin_mode"),
        ("margin_source", "lazy", "margin_source"),
        ("margin_refresh_epochs", 0, "margin_refresh_epochs"),
        ("margin_warmup_epochs", -1, "margin_warmup_epochs"),
        ("margin_num_samples", 0, "margin_num_samples"),
    ],
)
def test_bad_configuration_names_the_field(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        MarsArguments(**{field: value})
    with pytest.raises(ValueError, match=message):
        MarsConfig(output_dir=str(tmp_path), bf16=False, **{field: value})


def test_sampling_statistics_alone_match_the_full_statistics():
    """The callback logs the pool's ESS and curvature without margin quantiles; the figures are the same."""
    m = np.random.default_rng(3).normal(0.3, 1.5, 1000)
    w = sampling_weights(m, tau=0.5, floor=0.1)
    full = margin_statistics(m, w)
    alone = sampling_statistics(m, w)
    assert set(alone) == {"ess", "ess_fraction", "curvature_uniform", "curvature_sampled", "curvature_ratio"}
    for key, value in alone.items():
        assert value == pytest.approx(full[key], rel=1e-12)
    # Unnormalised weights give the same figures.
    assert sampling_statistics(m, 7 * w)["ess"] == pytest.approx(alone["ess"])


def test_table_update_of_every_pair_without_indices():
    table = MarginTable(4)
    table.update([1], [9.0], epoch=0)
    table.update(None, [0.5, -1.0, 2.0, 3.0], epoch=2)
    assert table.values.tolist() == [0.5, -1.0, 2.0, 3.0]
    assert table.epoch.tolist() == [2, 2, 2, 2]
    assert table.stale(epoch=3, max_age=1).tolist() == []
