"""MarginAwareSampler: fixed length, deterministic from (seed, epoch, weights), identical on every process."""

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler

from mars_trl import MarginAwareSampler
from mars_trl.sampling.margins import sampling_weights

sizes = st.integers(1, 300)


@settings(max_examples=100, deadline=None)
@given(sizes, st.integers(1, 600), st.integers(0, 2**31), st.integers(0, 50))
def test_length_and_warmup_permutations(num_pairs, num_samples, seed, epoch):
    sampler = MarginAwareSampler(num_pairs, num_samples=num_samples, seed=seed, coverage=False)
    sampler.set_epoch(epoch)
    idx = list(sampler)
    assert len(idx) == len(sampler) == num_samples
    assert all(0 <= i < num_pairs for i in idx)
    # Without weights: shuffling, each pair once per pass.
    counts = np.bincount(idx, minlength=num_pairs)
    assert counts.max() - counts.min() <= 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=1, max_size=200),
    st.integers(0, 2**31),
    st.integers(0, 20),
    st.integers(2, 8),
)
def test_deterministic_and_identical_across_simulated_ranks(margins, seed, epoch, world):
    weights = sampling_weights(np.array(margins), tau=0.5, floor=0.1)
    sequences = []
    for _rank in range(world):  # each process builds its own sampler from the same state
        sampler = MarginAwareSampler(len(margins), seed=seed)
        sampler.set_weights(weights)
        sampler.set_epoch(epoch)
        sequences.append(list(sampler))
    assert all(s == sequences[0] for s in sequences)
    assert list(sampler) == sequences[-1]  # re-iteration repeats the epoch


def test_epochs_and_seeds_change_the_sequence():
    sampler = MarginAwareSampler(1000, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(MarginAwareSampler(1000, seed=2)) != first


def test_weighted_draws_follow_the_weights_and_never_starve_a_pair():
    margins = np.linspace(-4, 4, 50)
    weights = sampling_weights(margins, tau=0.5, floor=0.1)
    sampler = MarginAwareSampler(50, num_samples=200_000, seed=0)
    sampler.set_weights(weights)
    freq = np.bincount(sampler.indices(), minlength=50) / 200_000
    np.testing.assert_allclose(freq, weights, atol=3e-3)
    assert freq.min() > 0
    assert freq[0] > 5 * freq[-1]  # the most mis-ranked pair far more often than the easiest


@pytest.mark.parametrize("world, batch", [(2, 4), (3, 5), (4, 8)])
def test_accelerate_shards_disjoint_batches_that_cover_the_epoch(world, batch):
    weights = sampling_weights(np.random.default_rng(0).normal(size=97), floor=0.1)
    shards = []
    for rank in range(world):
        sampler = MarginAwareSampler(97, seed=3)
        sampler.set_weights(weights)
        sampler.set_epoch(2)
        shard = BatchSamplerShard(BatchSampler(sampler, batch, drop_last=False), world, rank, even_batches=False)
        shards.append([list(b) for b in shard])
    positions = []  # positions within the global sequence each rank got: disjoint, and together the whole epoch
    global_batches = [list(b) for b in BatchSampler(sampler, batch, drop_last=False)]
    for rank, batches in enumerate(shards):
        assert batches == global_batches[rank::world]
        positions += [rank + world * k for k in range(len(batches))]
    assert sorted(positions) == list(range(len(global_batches)))


def test_state_dict_round_trip_resumes_the_same_sequence():
    sampler = MarginAwareSampler(30, num_samples=40, seed=7)
    sampler.set_weights(sampling_weights(np.arange(30.0) - 15))
    sampler.set_epoch(4)
    state = sampler.state_dict()
    restored = MarginAwareSampler(30, num_samples=40, seed=0)
    restored.load_state_dict(state)
    assert list(restored) == list(sampler) and restored.num_samples == 40


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        MarginAwareSampler(0)
    sampler = MarginAwareSampler(3)
    with pytest.raises(ValueError, match="finite"):
        sampler.set_weights(np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="not all zero"):
        sampler.set_weights(np.zeros(3))
