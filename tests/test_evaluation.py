"""mars_trl.evaluation: metrics on hand-made margins with known answers, and scoring a tiny model."""

import math

import numpy as np
import pytest
import torch
from conftest import cpu_args, make_decoder, make_encoder, to_format

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.evaluation.metrics import (
    binary_auc,
    expected_calibration_error,
    margin_snr,
    pairwise_accuracy,
    pairwise_auc,
    preference_metrics,
)
from mars_trl.evaluation.scoring import prepare_pairs, score_pairs

LOG3 = math.log(3.0)  # sigma(log 3) = 0.75


# -- metrics with known answers --------------------------------------------------------------------------------------
def test_accuracy_counts_ties_half():
    assert pairwise_accuracy([1.0, 2.0, -1.0, 0.0]) == pytest.approx(0.625)
    assert pairwise_accuracy([-1.0, -2.0]) == 0.0


def test_pairwise_auc_known_values():
    # Positives {1, 2, -0.5} against negatives {-1, -2, 0.5}: 8 of 9 comparisons won.
    assert pairwise_auc([1.0, 2.0, -0.5]) == pytest.approx(8 / 9)
    assert pairwise_auc([0.3, 1.0, 5.0]) == 1.0  # every margin positive
    assert pairwise_auc([-0.3, -1.0]) == 0.0
    assert pairwise_auc([0.0, 0.0]) == 0.5  # all ties
    # Symmetric margins: D_i > -D_j exactly as often as not.
    assert pairwise_auc([-2.0, 2.0]) == 0.5


def test_pairwise_auc_matches_the_definition_on_random_margins():
    rng = np.random.default_rng(0)
    m = np.round(rng.normal(0.3, 1.0, 200), 1)  # rounding makes ties
    brute = np.mean((m[:, None] > -m[None, :]) + 0.5 * (m[:, None] == -m[None, :]))
    assert pairwise_auc(m) == pytest.approx(brute)


def test_binary_auc_known_values():
    assert binary_auc([0.9, 0.8], [0.1, 0.8]) == pytest.approx(0.875)
    assert binary_auc([3, 4], [1, 2]) == 1.0
    assert math.isnan(binary_auc([], [1.0]))


def test_margin_snr():
    assert margin_snr([1.0, 3.0]) == pytest.approx(2.0)  # mean 2, population std 1
    assert margin_snr([2.0, 2.0]) == math.inf
    assert math.isnan(margin_snr([0.0, 0.0]))


def test_ece_known_values():
    assert expected_calibration_error([LOG3] * 4) == pytest.approx(0.25)  # 75% sure, always right
    assert expected_calibration_error([LOG3] * 3 + [-LOG3]) == pytest.approx(0.0)  # 75% sure, right 3 in 4
    assert expected_calibration_error([0.0, 0.0]) == pytest.approx(0.0)  # 50% sure, right half the time
    # Two bins: [log 3]*2 (conf .75, acc 1) and [log 9, -log 9] (conf .9, acc .5): 0.5*0.25 + 0.5*0.4
    assert expected_calibration_error([LOG3, LOG3, math.log(9), -math.log(9)]) == pytest.approx(0.325)


def test_preference_metrics_overall_and_per_subset():
    margins = np.array([2.0, 1.0, -1.0, 0.0])
    chosen = np.array([3.0, 1.0, 0.0, 0.5])
    rejected = chosen - margins
    out = preference_metrics(margins, subsets=["a", "a", "b", "b"], rewards_chosen=chosen, rewards_rejected=rejected)
    assert out["n"] == 4 and out["accuracy"] == pytest.approx(0.625)
    assert out["accuracy_se"] == pytest.approx(math.sqrt(0.625 * 0.375 / 4))
    assert out["margin_mean"] == pytest.approx(0.5) and out["margin_snr"] == pytest.approx(0.5 / math.sqrt(1.25))
    # Rewards: chosen {3, 1, 0, .5} against rejected {1, 0, 1, .5}, ties half: 3 wins 4; 1 wins 2 and ties 2 (3);
    # 0 ties 1 (0.5); .5 wins 1 and ties 1 (1.5).
    assert out["reward_auc"] == pytest.approx((4 + 3 + 0.5 + 1.5) / 16)
    assert sorted(out["subsets"]) == ["a", "b"]
    assert out["subsets"]["a"]["accuracy"] == 1.0 and out["subsets"]["b"]["accuracy"] == 0.25
    assert out["subsets"]["a"]["n"] == 2 and out["subsets"]["a"]["roc_auc"] == 1.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="finite"):
        preference_metrics([1.0, float("nan")])
    with pytest.raises(ValueError, match="subset labels"):
        preference_metrics([1.0, 2.0], subsets=["a"])


# -- scoring a tiny model --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_score_pairs_matches_a_manual_forward(conversational, standard_rows, encoder_tokenizer):
    """Prepared as the trainer prepares data, rewards in input order, equal to a direct forward pass."""
    tokenizer = encoder_tokenizer
    model = make_encoder(tokenizer)
    rows = to_format(standard_rows[:12], conversational, explicit_prompt=True)
    data = rows.add_column("subset", ["x" if i % 2 else "y" for i in range(len(rows))])
    scores = score_pairs(model, tokenizer, data, batch_size=5, max_length=64, show_progress=False)
    assert scores.rows.tolist() == list(range(12)) and scores.num_dropped == 0
    assert list(scores.subsets) == ["y", "x"] * 6
    prepared = prepare_pairs(rows, tokenizer, max_length=64).with_format(None)
    model.eval()
    with torch.no_grad():
        for k in (0, 7):
            chosen = model(input_ids=torch.tensor([prepared[k]["chosen_ids"]])).logits.item()
            rejected = model(input_ids=torch.tensor([prepared[k]["rejected_ids"]])).logits.item()
            assert scores.rewards_chosen[k] == pytest.approx(chosen, abs=1e-5)
            assert scores.margins[k] == pytest.approx(chosen - rejected, abs=1e-5)
    metrics = scores.metrics()
    assert set(metrics["subsets"]) == {"x", "y"} and metrics["n"] == 12 and metrics["num_dropped"] == 0


def test_score_pairs_drops_long_pairs_like_training_and_restores_mode(standard_rows, decoder_tokenizer):
    model = make_decoder(decoder_tokenizer)
    model.train()
    rows = to_format(standard_rows[:6], False, True).to_list()
    rows[2]["rejected"] = rows[2]["rejected"] + " and it is" * 20  # far over max_length
    scores = score_pairs(model, decoder_tokenizer, rows, batch_size=4, max_length=32, show_progress=False)
    assert scores.rows.tolist() == [0, 1, 3, 4, 5] and scores.num_dropped == 1
    assert model.training  # put back in training mode
    assert scores.subsets is None and np.all(np.isfinite(scores.margins))


def test_score_pairs_with_a_trainer_uses_its_preparation(tmp_path, standard_rows, encoder_tokenizer):
    """After training, held-out pairs are scored exactly as the trainer prepares data; a trained model separates them."""
    tokenizer = encoder_tokenizer
    train = to_format(standard_rows[:32], True, True)
    trainer = MarsRewardTrainer(
        model=make_encoder(tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=3, learning_rate=3e-3)),
        train_dataset=train,
        processing_class=tokenizer,
    )
    trainer.train()
    held_out = to_format(standard_rows[32:], True, True)
    scores = score_pairs(trainer.model, None, held_out, batch_size=8, trainer=trainer, show_progress=False)
    direct = score_pairs(trainer.model, tokenizer, held_out, batch_size=16, max_length=64, show_progress=False)
    np.testing.assert_allclose(scores.margins, direct.margins, atol=1e-5)
    assert scores.metrics()["accuracy"] > 0.6  # the GOOD/BAD words are learnable
