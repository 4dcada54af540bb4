"""LoRA and QLoRA reward models that work the first time: the scalar head is always trained and saved.

- `heads`: which module of a sequence-classification model is its reward head.
- `adapter_config`: [`prepare_peft_config`] repairs a PEFT config that would leave the head random and unsaved.
- `quantization`: bitsandbytes, [`qlora_config`], k-bit preparation and loading for training.
- `loading`: [`load_reward_model`] loads a trained reward model (full or adapter) for scoring.
- `training`: [`prepare_peft_training`], what [`MarsRewardTrainer`] runs before `RewardTrainer.__init__`.
- `merge`: [`merge_adapter`] merges an adapter and its head into a plain checkpoint.
"""
