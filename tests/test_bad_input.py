"""Bad input: each case fails early with one line that names the problem and the fix."""

import pytest
from conftest import cpu_args, make_decoder, to_format
from datasets import Dataset

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.data.validation import DataError


def build(tmp_path, tokenizer, data, eval_dataset=None, **overrides):
    return MarsRewardTrainer(
        model=make_decoder(tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, **overrides)),
        train_dataset=data,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )


def test_misspelt_column_is_named_with_a_suggestion(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True).rename_column("chosen", "choosen")
    with pytest.raises(DataError, match=r"no `chosen` column \(did you mean `choosen`\?"):
        build(tmp_path, decoder_tokenizer, data)


def test_missing_column_in_an_eval_set(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True)
    with pytest.raises(DataError, match="eval `holdout` dataset has no `rejected` column"):
        build(tmp_path, decoder_tokenizer, data, eval_dataset={"holdout": data.remove_columns("rejected")})


def test_empty_dataset(tmp_path, decoder_tokenizer):
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(DataError, match="train dataset is empty: pass at least one"):
        build(tmp_path, decoder_tokenizer, empty)


def test_every_pair_dropped_by_max_length(tmp_path, standard_rows, decoder_tokenizer):
    with pytest.raises(DataError, match="every pair was dropped.*max_length=3"):
        build(tmp_path, decoder_tokenizer, to_format(standard_rows, False, True), max_length=3)


def test_chosen_equals_rejected_everywhere(tmp_path, standard_rows, decoder_tokenizer):
    rows = [{**r, "rejected": r["chosen"]} for r in standard_rows]
    with pytest.raises(DataError, match="chosen and rejected sides are identical"):
        build(tmp_path, decoder_tokenizer, Dataset.from_list(rows))


def test_mixed_conversational_and_standard(tmp_path, standard_rows, decoder_tokenizer):
    rows = [
        {"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": r["chosen"], "rejected": r["rejected"]}
        for r in standard_rows
    ]
    with pytest.raises(DataError, match="mixes standard and conversational"):
        build(tmp_path, decoder_tokenizer, Dataset.from_list(rows))


def test_non_numeric_margin_column(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True).add_column("margin", ["high"] * len(standard_rows))
    with pytest.raises(DataError, match="`margin` column must be numeric"):
        build(tmp_path, decoder_tokenizer, data)


def test_non_text_column(tmp_path, standard_rows, decoder_tokenizer):
    data = Dataset.from_list([{"chosen": 1, "rejected": 2}] * 4)
    with pytest.raises(DataError, match="`chosen` column holds int64"):
        build(tmp_path, decoder_tokenizer, data)


def test_out_of_range_config(tmp_path):
    with pytest.raises(ValueError, match="`margin_uniform_floor` must lie in"):
        MarsConfig(**cpu_args(tmp_path, margin_uniform_floor=2.0))
    with pytest.raises(ValueError, match="`augment_strategy` must be one of"):
        MarsConfig(**cpu_args(tmp_path, augment_strategy="best"))
    with pytest.raises(ValueError, match="`augmenter` must be one of"):
        MarsConfig(**cpu_args(tmp_path, augmenter="gpt"))
    with pytest.raises(ValueError, match="`margin_scoring_precision` must be one of .* 'auto' scores in the"):
        MarsConfig(**cpu_args(tmp_path, margin_scoring_precision="fp8"))
    with pytest.raises(ValueError, match="`margin_nonfinite` must be one of"):
        MarsConfig(**cpu_args(tmp_path, margin_nonfinite="skip"))
    with pytest.raises(ValueError, match="`max_length_policy` must be one of"):
        MarsConfig(**cpu_args(tmp_path, max_length_policy="cut"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("augment_budget", True, "an integer >= 0 or None"),  # a bool is not a budget
        ("augment_budget", -1, "an integer >= 0 or None"),
        ("margin_refresh_epochs", 0, "a positive integer, got 0"),
        ("margin_warmup_epochs", 1.5, "an integer >= 0, got 1.5"),
        ("augment_batch_size", 0, "a positive integer or None"),
        ("semantic_max_retries", -1, "an integer >= 0, got -1"),
    ],
)
def test_integer_fields_name_the_field_and_the_range(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=f"`{field}` must be {message}"):
        MarsConfig(**cpu_args(tmp_path, **{field: value}))


def test_trust_remote_code_stays_off(tmp_path):
    assert MarsConfig(**cpu_args(tmp_path)).trust_remote_code is False


# -- hostile input, round two -----------------------------------------------------------------------------------------


def test_non_finite_margin_column_names_the_row(tmp_path, standard_rows, decoder_tokenizer):
    margins = [0.5] * len(standard_rows)
    margins[3] = float("nan")
    data = to_format(standard_rows, False, True).add_column("margin", margins)
    with pytest.raises(DataError, match=r"`margin` column holds nan in row 3 \(1 non-finite"):
        build(tmp_path, decoder_tokenizer, data)
    margins[3], margins[5] = 0.5, float("inf")
    data = to_format(standard_rows, False, True).add_column("margin", margins)
    with pytest.raises(DataError, match="holds inf in row 5"):
        build(tmp_path, decoder_tokenizer, data, eval_dataset=None)


@pytest.mark.parametrize("column", ["prompt", "chosen", "rejected"])
def test_none_in_a_text_column_names_column_and_row(tmp_path, standard_rows, decoder_tokenizer, column):
    rows = [dict(r) for r in standard_rows]
    rows[7][column] = None
    with pytest.raises(DataError, match=rf"`{column}` column is empty \(None\) in row 7"):
        build(tmp_path, decoder_tokenizer, Dataset.from_list(rows))
    # The same in an evaluation set, which RewardTrainer would also tokenize.
    with pytest.raises(DataError, match=rf"eval dataset's `{column}` column is empty \(None\) in row 7"):
        build(tmp_path, decoder_tokenizer, Dataset.from_list(standard_rows), eval_dataset=Dataset.from_list(rows))


@pytest.mark.parametrize("value", ["no", "False", 1, None])
def test_boolean_fields_reject_non_booleans(tmp_path, value):
    with pytest.raises(ValueError, match=r"`use_mars` must be True or False, got"):
        MarsConfig(**cpu_args(tmp_path, use_mars=value))
    with pytest.raises(ValueError, match=r"`margin_standardize` must be True or False"):
        MarsConfig(**cpu_args(tmp_path, margin_standardize=value))


def test_boolean_fields_from_the_command_line_are_parsed(tmp_path):
    from trl import TrlParser

    (config,) = TrlParser([MarsConfig]).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_mars", "no", "--margin_sampling", "false", "--bf16", "false"]
    )
    assert config.use_mars is False and config.margin_sampling is False


def test_max_steps_that_ends_in_the_warmup_warns_with_the_first_refresh_step(
    tmp_path, standard_rows, decoder_tokenizer, caplog
):
    data = to_format(standard_rows, False, True)  # 48 pairs, batch 8: 6 steps an epoch
    with caplog.at_level("WARNING", logger="mars_trl.trainer"):
        trainer = build(tmp_path / "a", decoder_tokenizer, data, max_steps=4, margin_warmup_epochs=1)
        trainer.train()
    warned = [r.getMessage() for r in caplog.records if "ends before MARS starts" in r.getMessage()]
    assert len(warned) == 1 and "after step 6" in warned[0] and "max_steps=4" in warned[0]
    assert not [e for e in trainer.state.log_history if "mars/pool_size" in e]  # indeed no refresh ran
    caplog.clear()
    with caplog.at_level("WARNING", logger="mars_trl.trainer"):
        trainer = build(tmp_path / "b", decoder_tokenizer, data, max_steps=8, margin_warmup_epochs=1)
        trainer.train()
    assert not [r for r in caplog.records if "ends before MARS starts" in r.getMessage()]
    assert [e for e in trainer.state.log_history if "mars/pool_size" in e]


def test_bf16_scoring_on_a_cpu_without_bf16_warns(tmp_path, standard_rows, decoder_tokenizer, monkeypatch):
    import warnings

    import mars_trl.trainer as trainer_module

    data = to_format(standard_rows, False, True)
    monkeypatch.setattr(trainer_module, "cpu_runs_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without bfloat16 instructions.*Use 'auto'"):
        build(tmp_path, decoder_tokenizer, data, margin_scoring_precision="bf16")
    monkeypatch.setattr(trainer_module, "cpu_runs_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*bfloat16 instructions.*")
        build(tmp_path, decoder_tokenizer, data, margin_scoring_precision="bf16")
