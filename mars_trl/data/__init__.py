"""Preference data in: loading files and Hub sets, validating them, preparing them as RewardTrainer does, and
addressing the text fields of a pair in any of TRL's formats.

- `loading`: [`load_preference_dataset`] and model-path checks.
- `validation`: clear errors for malformed datasets ([`DataError`]).
- `preparation`: chat templates, eos handling, truncation, and RewardTrainer's tokenization run without a trainer.
- `fields`: the text fields of a preference pair (prompt, chosen, rejected) in any of the four formats.
"""
