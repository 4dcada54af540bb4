"""mars_trl.sampling.scoring: the margin-scoring pass batches single sequences by length and returns the same rewards as an
unbatched forward pass, in the caller's order."""

import numpy as np
import pytest
import torch
from conftest import make_decoder, make_encoder
from datasets import Dataset

from mars_trl.sampling.scoring import dataset_fetch, pair_lengths, score_margins


def _pairs(rng: np.random.Generator, n: int, vocab: int) -> Dataset:
    # Sides of very different lengths within a pair: what sequence-level batching is for.
    def seq():
        return rng.integers(5, vocab, size=int(rng.integers(2, 30))).tolist()

    return Dataset.from_dict({"chosen_ids": [seq() for _ in range(n)], "rejected_ids": [seq() for _ in range(n)]})


def _one_by_one(model, data: Dataset, indices) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.array(
            [
                [
                    model(input_ids=torch.tensor([data[int(i)][side]])).logits.item()
                    for side in ("chosen_ids", "rejected_ids")
                ]
                for i in indices
            ]
        )


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_rewards_equal_an_unpadded_forward_in_the_callers_order(kind, decoder_tokenizer, encoder_tokenizer):
    tokenizer = decoder_tokenizer if kind == "decoder" else encoder_tokenizer
    model = (make_decoder if kind == "decoder" else make_encoder)(tokenizer)
    data = _pairs(np.random.default_rng(0), 23, len(tokenizer))
    indices = np.array([7, 3, 22, 0, 3, 15, 9, 1, 18, 11])  # unordered, with a repeat
    model.train()
    result = score_margins(
        model,
        dataset_fetch(data),
        indices,
        pair_lengths(data),
        tokenizer.pad_token_id,
        batch_size=3,
        show_progress=False,
    )
    assert model.training  # put back
    expected = _one_by_one(model, data, indices)
    np.testing.assert_allclose(result.rewards, expected, atol=1e-5)
    np.testing.assert_allclose(result.margins, expected[:, 0] - expected[:, 1], atol=1e-5)
    assert result.indices.tolist() == indices.tolist()


def test_batches_are_sorted_sequences_not_pairs(decoder_tokenizer):
    """A batch holds 2 x batch_size sequences of similar length, so it pads less than pairs padded to their longer side."""
    model = make_decoder(decoder_tokenizer)
    data = Dataset.from_dict(
        {
            "chosen_ids": [[5] * 30, [6] * 2, [7] * 29, [8] * 3],
            "rejected_ids": [[9] * 2, [10] * 31, [11] * 3, [12] * 28],
        }
    )
    shapes = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        score_margins(
            model, dataset_fetch(data), np.arange(4), pair_lengths(data), 0, batch_size=2, show_progress=False
        )
    finally:
        handle.remove()
    assert shapes == [(4, 31), (4, 3)]  # pairs would have been padded to (4, 31) twice
    assert pair_lengths(data).tolist() == [[30, 2], [2, 31], [29, 3], [3, 28]]


def test_non_finite_margin_names_the_pair_unless_the_caller_checks_itself(decoder_tokenizer):
    model = make_decoder(decoder_tokenizer)
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    data = _pairs(np.random.default_rng(1), 4, len(decoder_tokenizer))
    args = (model, dataset_fetch(data), np.arange(4), pair_lengths(data), 0, 2)
    with pytest.raises(FloatingPointError, match="non-finite margin .* training pair 0"):
        score_margins(*args, show_progress=False)
    result = score_margins(*args, show_progress=False, require_finite=False)
    assert np.isnan(result.rewards).all()
