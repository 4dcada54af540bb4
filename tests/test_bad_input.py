"""Bad input: each case fails early with one line that names the problem and the fix."""

import pytest
from conftest import cpu_args, make_decoder, to_format
from datasets import Dataset

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.validation import DataError


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
