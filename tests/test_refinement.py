"""Self-refinement rounds on tiny models: pool growth, provenance, matched budgets, failures, resume."""

import json

import numpy as np
import pytest
from conftest import cpu_args, make_decoder, make_encoder, to_format
from datasets import Dataset
from test_augment import t5_dir, t5_model, t5_tokenizer  # noqa: F401 -- session fixtures of the tiny T5

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.names import ROUND, SOURCE
from mars_trl.refinement.rounds import AugmenterFailure

FILLERS = ["clear", "kind", "polite", "helpful", "accurate", "correct", "hello"]


def _edit(value, j):
    """The same neutral word appended to every text: both sides change alike, so the label holds."""
    word = FILLERS[j % len(FILLERS)] + ("" if j < len(FILLERS) else f" {FILLERS[(j // len(FILLERS)) % len(FILLERS)]}")
    if isinstance(value, str):
        return f"{value} {word}"
    return [{**m, "content": f"{m['content']} {word}"} for m in value]


def suffix_augmenter(pairs, k):
    return [[{key: _edit(value, j) for key, value in pair.items()} for j in range(k)] for pair in pairs]


def mars_logs(trainer):
    return [e for e in trainer.state.log_history if "mars/pool_size" in e]


def build(tmp_path, tokenizer, rows, augmenter=suffix_augmenter, model=None, **overrides):
    settings = dict(num_train_epochs=3, augment_budget=40, augment_variants_per_pair=5)  # 20 per round
    settings.update(overrides)
    return MarsRewardTrainer(
        model=model if model is not None else make_decoder(tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, **settings)),
        train_dataset=rows,
        processing_class=tokenizer,
        augmenter=augmenter,
    )


def test_rounds_grow_the_pool_with_provenance(tmp_path, standard_rows, decoder_tokenizer):
    trainer = build(tmp_path, decoder_tokenizer, to_format(standard_rows, False, True))
    trainer.train()
    pool = trainer.pool
    assert len(pool) == 48 + 20 + 20
    assert trainer.state.global_step == 6 + 9 + 11  # pool epochs of 48, 68 and 88 pairs
    sources, rounds = pool.sources(), pool.rounds()
    assert np.all((sources >= 0) & (sources < 48)) and sorted(set(rounds.tolist())) == [1, 2]
    row = pool[48]
    assert row["mars_index"] == 48 and row[SOURCE] == sources[0] and row[ROUND] == 1
    # Tokenized exactly as RewardTrainer prepares explicit-prompt standard data: prompt + chosen + eos.
    variant = trainer.refiner.cache[int(row[SOURCE])][int(row["mars_variant"])]
    tok = decoder_tokenizer
    assert row["chosen_ids"] == tok(variant["prompt"] + variant["chosen"] + tok.eos_token)["input_ids"]
    assert row["rejected_ids"] == tok(variant["prompt"] + variant["rejected"] + tok.eos_token)["input_ids"]
    logs = mars_logs(trainer)
    assert [e["mars/augment_added"] for e in logs] == [20.0, 20.0]
    assert [e["mars/pool_size"] for e in logs] == [68.0, 88.0]
    reports = trainer.refiner.reports
    # Each pair's variant pool is generated once and reused by later rounds.
    assert reports[0]["variants_reused_pairs"] == 0
    generated_pairs = len(trainer.refiner.cache)
    assert sum(r["variants_generated"] for r in reports) == 5 * generated_pairs
    # Augmented pairs are sampled too: margins cover the whole pool and the sampler draws from it.
    assert trainer.margins.shape == (88,) and trainer.margin_sampler.weights.shape == (88,)
    # ... and the last pool epoch visits every one of them, augmented pairs included.
    assert sorted(set(trainer.margin_sampler.indices().tolist())) == list(range(88))


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
@pytest.mark.parametrize("explicit_prompt", [False, True], ids=["implicit", "explicit"])
def test_every_format(tmp_path, conversational, explicit_prompt, standard_rows, encoder_tokenizer):
    trainer = build(
        tmp_path,
        encoder_tokenizer,
        to_format(standard_rows, conversational, explicit_prompt),
        model=make_encoder(encoder_tokenizer),
        num_train_epochs=2,
    )
    trainer.train()
    assert len(trainer.pool) == 48 + 40  # one round, the whole budget
    cached = trainer.refiner.cache[int(trainer.pool.sources()[0])][0]
    original = trainer.refiner.raw_pair(int(trainer.pool.sources()[0]))
    assert set(cached) == set(original)
    if conversational:
        assert [m["role"] for m in cached["chosen"]] == [m["role"] for m in original["chosen"]]


@pytest.mark.parametrize("strategy", ["none", "uniform", "west_of_n", "mars"])
def test_strategies_spend_matched_budgets(tmp_path, strategy, standard_rows, decoder_tokenizer):
    trainer = build(tmp_path, decoder_tokenizer, to_format(standard_rows, False, True), augment_strategy=strategy)
    trainer.train()
    # Pool epochs of 48, 68, 88 pairs (6 + 9 + 11 steps) for every augmenting strategy alike.
    assert trainer.state.global_step == (18 if strategy == "none" else 26)
    assert len(trainer.pool) == 48 + (0 if strategy == "none" else 40)
    if strategy == "uniform":
        counts = np.bincount(trainer.pool.sources()[:20], minlength=48)
        assert counts.max() - counts.min() <= 1


def test_mars_spends_the_budget_on_hard_pairs(tmp_path, standard_rows, decoder_tokenizer):
    trainer = build(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        num_train_epochs=2,
        augment_budget=48,
        margin_tau=5.0,
    )
    trainer.train()
    report = trainer.refiner.reports[0]
    margins = np.array(report["hardest_margins"])
    counts = np.bincount(trainer.pool.sources(), minlength=48)
    assert counts[report["hardest_pairs"][0]] == counts.max()
    assert np.all(np.diff(margins) >= 0)


def test_a_per_pair_cap_spreads_what_the_hardest_pairs_cannot_take(tmp_path, standard_rows, decoder_tokenizer):
    rows = to_format(standard_rows, False, True)
    settings = dict(num_train_epochs=2, augment_budget=48, margin_tau=5.0)
    free = build(tmp_path / "free", decoder_tokenizer, rows, **settings)
    free.train()
    capped = build(tmp_path / "capped", decoder_tokenizer, rows, augment_max_per_pair=2, **settings)
    capped.train()
    # Same seed, same margins at the round: uncapped, tau 5 piles the budget on the hardest pairs...
    assert free.refiner.reports[0]["hardest_pairs"] == capped.refiner.reports[0]["hardest_pairs"]
    assert np.bincount(free.pool.sources(), minlength=48).max() == free.refiner.reports[0]["most_to_one_pair"] > 2
    # ...capped, no pair gets more than 2 and the whole budget is still spent, hardest pairs at the cap.
    counts = np.bincount(capped.pool.sources(), minlength=48)
    report = capped.refiner.reports[0]
    assert counts.max() == report["most_to_one_pair"] == 2 and counts.sum() == report["added"] == 48
    assert counts[report["hardest_pairs"][0]] == 2


def test_a_per_pair_cap_too_small_for_the_budget_is_refused_before_training(tmp_path, standard_rows, decoder_tokenizer):
    # 200 over 2 rounds: 100 in a round, more than 48 pairs x 2.
    rows = to_format(standard_rows, False, True)
    trainer = build(tmp_path, decoder_tokenizer, rows, augment_max_per_pair=2, augment_budget=200)
    with pytest.raises(ValueError, match=r"augment_max_per_pair=2.*48 labelled pairs \(96\).*at least 3"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_west_of_n_keeps_each_pairs_highest_margin_variants(tmp_path, standard_rows, decoder_tokenizer):
    """With lr=0 the model is fixed, so the chosen variants can be checked against a fresh scoring of all of them."""
    trainer = build(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        num_train_epochs=2,
        augment_strategy="west_of_n",
        learning_rate=0.0,
        augment_budget=48,
    )
    trainer.train()
    refiner = trainer.refiner
    candidates = [(s, v) for s in range(48) for v in range(len(refiner.cache[s]))]
    tokens = refiner.tokenize(candidates, round_id=1)
    margins = {}
    from mars_trl.sampling.scoring import dataset_fetch, pair_lengths, score_margins

    data = Dataset.from_list(
        [{"chosen_ids": tokens[k]["chosen_ids"], "rejected_ids": tokens[k]["rejected_ids"]} for k in candidates]
    )
    scored = score_margins(
        trainer.model, dataset_fetch(data), np.arange(len(candidates)), pair_lengths(data), 0, 16, show_progress=False
    )
    for key, m in zip(candidates, scored.margins):
        margins[key] = m
    picked = trainer.pool.segments[0]
    for s, v in zip(picked[SOURCE], picked["mars_variant"]):
        best = max(margins[(s, w)] for w in range(len(refiner.cache[s])))
        assert margins[(s, v)] == pytest.approx(best, abs=1e-6)


def test_failures_are_counted_and_training_goes_on(tmp_path, standard_rows, decoder_tokenizer):
    calls = {"n": 0}

    def flaky(pairs, k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("server timeout")
        out = suffix_augmenter(pairs, k)
        out[0] = [dict(pairs[0])]  # identical to the original: invalid
        if len(out) > 1:  # (a last batch may hold one pair)
            out[1] = []  # nothing for this pair
        return out

    trainer = build(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        augmenter=flaky,
        augment_batch_size=4,
        augment_budget=80,
    )
    trainer.train()
    first = trainer.refiner.reports[0]
    assert first["augmenter_failures"] == 4 and first["variants_invalid"] >= 1 and first["budget_unfilled"] > 0
    assert first["added"] + first["budget_unfilled"] == 40
    # The planned epochs of 48, 88, 128 pairs (6 + 11 + 16 steps) hold: the shortfall is drawn by margin instead.
    assert trainer.state.global_step == 33


def test_wrong_count_and_raise_mode(tmp_path, standard_rows, decoder_tokenizer):
    def short(pairs, k):
        return suffix_augmenter(pairs, k)[:-1]

    trainer = build(
        tmp_path / "skip",
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        augmenter=short,
        num_train_epochs=2,
    )
    trainer.train()
    assert trainer.refiner.reports[0]["augmenter_failures"] > 0
    trainer = build(
        tmp_path / "raise",
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        augmenter=short,
        num_train_epochs=2,
        augment_budget=20,
        augment_on_error="raise",
    )
    with pytest.raises(AugmenterFailure, match=r"failed on 20 pairs \(ids .*one list of variants per input pair"):
        trainer.train()


def test_max_length_drops_are_counted(tmp_path, standard_rows, decoder_tokenizer):
    def long(pairs, k):
        return [
            [
                {key: _edit(value, j) + (" clear" * 60 if key == "chosen" else "") for key, value in pair.items()}
                for j in range(k)
            ]
            for pair in pairs
        ]

    trainer = build(
        tmp_path, decoder_tokenizer, to_format(standard_rows, False, True), augmenter=long, num_train_epochs=2
    )
    trainer.train()
    report = trainer.refiner.reports[0]
    assert report["dropped_max_length"] > 0 and report["added"] == 0


def test_user_margin_column_is_copied_to_variants(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True).add_column("margin", [float(i % 3) for i in range(48)])
    trainer = build(tmp_path, decoder_tokenizer, data, num_train_epochs=2)
    trainer.train()
    segment = trainer.pool.segments[0]
    assert segment["margin"] == [float(s % 3) for s in segment[SOURCE]]


def test_pretokenized_data_cannot_be_augmented(tmp_path, decoder_tokenizer):
    data = Dataset.from_list([{"chosen_ids": [4, 5], "rejected_ids": [6]}] * 8)
    with pytest.raises(ValueError, match="pre-tokenized"):
        build(tmp_path, decoder_tokenizer, data)


def test_resume_after_a_round_continues_exactly(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True)

    def run(out, resume=None):
        trainer = build(
            out,
            decoder_tokenizer,
            data,
            save_strategy="steps",
            save_steps=4,
            epoch_length="fixed",
            margin_num_samples=40,
            margin_source="online",
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "a")
    checkpoint = tmp_path / "a" / "checkpoint-8"  # mid-epoch 1, after the first round
    state = json.loads((checkpoint / "mars_state.json").read_text())
    assert state["scalars"]["refiner"]["segment_sizes"] == [20]
    assert (checkpoint / "mars_pool.jsonl").exists() and (checkpoint / "mars_variants.jsonl").exists()
    resumed = run(tmp_path / "b", resume=str(checkpoint))

    def tail(trainer):
        return [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e and e["step"] > 8]

    assert [s for s, _ in tail(resumed)] == [s for s, _ in tail(full)]
    assert [v for _, v in tail(resumed)] == pytest.approx([v for _, v in tail(full)], rel=1e-5)
    assert resumed.pool.sources().tolist() == full.pool.sources().tolist()
    assert resumed.pool.to_jsonl() == full.pool.to_jsonl()
    np.testing.assert_allclose(resumed.margins, full.margins, rtol=1e-5, atol=1e-6)


def test_budget_beyond_the_variant_supply(tmp_path, standard_rows, decoder_tokenizer):
    with pytest.raises(
        ValueError, match=r"exceeds what the variant pools can supply .*48 labelled pairs x 5 variants"
    ):
        # 482 over 2 rounds: 241 in a round, one more than 48 pairs x 5 variants; refused before the first step.
        build(tmp_path, decoder_tokenizer, to_format(standard_rows, False, True), augment_budget=482).train()


def test_perturbation_augmenter_named_in_the_config(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=2, augmenter="perturbation", augment_budget=24)),
        train_dataset=to_format(standard_rows, True, True),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    report = trainer.refiner.reports[0]
    assert report["augmenter"] == "perturbation" and report["added"] == 24 and len(trainer.pool) == 72


def test_paraphrase_augmenter_named_in_the_config(tmp_path, standard_rows, decoder_tokenizer, t5_dir):  # noqa: F811
    """The authors' augmenter, here with a tiny T5 saved locally standing in for the Hub model id."""
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(
            **cpu_args(
                tmp_path,
                num_train_epochs=2,
                augmenter="paraphrase",
                augmenter_model=t5_dir,
                augment_budget=8,
                max_length=None,  # the random tiny T5's "paraphrases" run long; keep them, so the round adds
            )
        ),
        train_dataset=to_format(standard_rows[:16], False, True),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    report = trainer.refiner.reports[0]
    assert report["augmenter"] == "paraphrase"
    assert report["added"] + report["budget_unfilled"] + report["dropped_max_length"] == report["budget"] == 8
    assert report["added"] > 0 and report["pairs_with_budget"] > 0


def test_report_files_plots_and_readable_pool(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(
            **cpu_args(
                tmp_path, num_train_epochs=4, augment_budget=60, augment_variants_per_pair=5, eval_strategy="epoch"
            )
        ),
        train_dataset=to_format(standard_rows, False, True),
        eval_dataset={"heldout": to_format(standard_rows[:16], False, True)},
        processing_class=decoder_tokenizer,
        augmenter=suffix_augmenter,
    )
    trainer.train()
    files = trainer.save_mars_report(str(tmp_path / "report"))
    for name in ("report", "pool", "plot_margins", "plot_allocation", "plot_accuracy", "markdown"):
        assert (tmp_path / "report" / files[name].split("/")[-1]).stat().st_size > 0, name
    report = json.loads((tmp_path / "report" / "mars_report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3] and report["pool_size"] == 48 + 60
    lines = (tmp_path / "report" / "mars_augmented_pairs.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 60 and {"source", "round", "variant", "augmenter", "prompt", "chosen", "rejected"} <= set(
        first
    )
    assert first["chosen"] == trainer.refiner.cache[first["source"]][first["variant"]]["chosen"]
    markdown = (tmp_path / "report" / "mars_report.md").read_text()
    assert "![Budget against margin](mars_allocation.png)" in markdown and "| 3 | 3 | 20 |" in markdown


def test_a_second_train_call_starts_mars_afresh(tmp_path, standard_rows, decoder_tokenizer):
    """A second `train()` (or a hyperparameter-search trial) without `resume_from_checkpoint` starts MARS from
    scratch, as Trainer starts its epochs from scratch: same rounds, same pool growth, no margins carried over."""
    trainer = build(tmp_path, decoder_tokenizer, to_format(standard_rows, False, True))
    trainer.train()
    first = [(e["mars/refresh_epoch"], e["mars/pool_size"], e["mars/augment_added"]) for e in mars_logs(trainer)]
    assert first and len(trainer.pool) == 48 + 40 and len(trainer.refiner.reports) == 2
    trainer.train()
    second = [(e["mars/refresh_epoch"], e["mars/pool_size"], e["mars/augment_added"]) for e in mars_logs(trainer)]
    assert second == first
    assert len(trainer.pool) == 48 + 40 and len(trainer.refiner.reports) == 2
    assert len(trainer.mars_callback.history) == len(first)
    assert trainer.run_plan.pool_sizes == (48, 68, 88)


@pytest.mark.parametrize("strategy", ["mars", "uniform", "west_of_n"])
def test_round_accounting_adds_up_with_long_variants_and_repeated_draws(
    tmp_path, standard_rows, decoder_tokenizer, strategy
):
    """added + dropped_max_length + budget_unfilled = budget, when draws repeat (3 variants a pair, margin-weighted
    counts above 3) and some variants (every one of some pairs) are over max_length."""
    long_tail = " the cat likes the ball" * 12

    def augmenter(pairs, k):
        out = []
        for pair, variants in zip(pairs, suffix_augmenter(pairs, k)):
            whole = "dog" in pair["chosen"]  # every variant of these pairs is too long
            out.append(
                [{**v, "chosen": v["chosen"] + long_tail} if whole or j == 0 else v for j, v in enumerate(variants)]
            )
        return out

    trainer = build(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        augmenter=augmenter,
        augment_strategy=strategy,
        augment_budget=240,
        augment_variants_per_pair=3,
    )
    trainer.train()
    reports = trainer.refiner.reports
    assert len(reports) == 2
    for r in reports:
        assert r["added"] + r["dropped_max_length"] + r["budget_unfilled"] == r["budget"] == 120, r
        assert r["dropped_max_length"] > 0 and r["variants_over_max_length"] > 0, r
    if strategy == "mars":  # counts above 3 repeat a pair's variants: each repeat of a long one costs budget
        assert max(trainer.refiner.last_counts) > 3
        assert any(r["dropped_max_length"] > r["variants_over_max_length"] for r in reports)
    assert len(trainer.pool) == 48 + sum(r["added"] for r in reports)


@pytest.mark.parametrize("setting", ["uniform", "raise"])
def test_west_of_n_ranks_non_finite_candidates_last(tmp_path, standard_rows, decoder_tokenizer, setting):
    """A candidate variant the model scores as NaN is drawn only after the pair's finite ones (by default), or stops
    the run with `margin_nonfinite='raise'`; the labelled pairs themselves all score finite here."""
    model = make_decoder(decoder_tokenizer)
    poison = decoder_tokenizer.convert_tokens_to_ids("clear")  # `_edit`'s first filler word: variant 0 of each pair
    assert poison != decoder_tokenizer.unk_token_id

    def nan_for_variant_zero(module, args, kwargs, output):
        if not module.training:
            output.logits[(kwargs["input_ids"] == poison).any(dim=1)] = float("nan")
        return output

    model.register_forward_hook(nan_for_variant_zero, with_kwargs=True)
    trainer = build(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        model=model,
        num_train_epochs=2,
        augment_strategy="west_of_n",
        augment_budget=48,
        margin_nonfinite=setting,
    )
    if setting == "raise":
        with pytest.raises(FloatingPointError, match="non-finite margin"):
            trainer.train()
        return
    trainer.train()
    picked = trainer.pool.segments[0]
    variants = np.asarray(picked["mars_variant"])
    assert variants.size == 48 and (variants != 0).all()  # every draw a finite candidate; none was short of them
    assert np.isfinite([e["loss"] for e in trainer.state.log_history if "loss" in e]).all()
