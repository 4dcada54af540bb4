"""The trainer's entry: [`prepare_peft_training`] readies a model, its quantization and its PEFT config for training."""

from __future__ import annotations

import os
import warnings

from .adapter_config import MarsPeftWarning, caller_stacklevel, prepare_peft_config
from .heads import untrained_head
from .loading import check_adapter_conflict, has_adapter
from .quantization import (
    is_quantized,
    load_kbit_reward_model,
    prepare_kbit_model,
    quantization_kind,
    require_bitsandbytes,
)


def prepare_peft_training(model, args, quantization_config=None, peft_config=None):
    """
    Everything [`MarsRewardTrainer`] does about PEFT before `RewardTrainer.__init__`; returns
    `(model, quantization_config, peft_config)` to pass on.

    - 4-bit/8-bit requested without bitsandbytes: `ImportError` naming `pip install "mars-trl[qlora]"`.
    - A quantized base with no adapter to train: `ValueError` (QLoRA needs a `peft_config`).
    - An adapter (PeftModel, adapter folder) together with a `peft_config`: `ValueError` with both ways out.
    - The `peft_config` is fixed so the head is trained and saved ([`prepare_peft_config`]).
    - A model id plus a quantization config is loaded quantized here and prepared for k-bit training
      (`prepare_model_for_kbit_training`) before LoRA is added; an already quantized model is prepared too.
    """
    init_kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    by_name = isinstance(model, (str, os.PathLike))
    kind = None
    if by_name:
        model = str(model)
        # RewardTrainer applies a quantization config only when it loads the model from a name.
        requested = quantization_config if quantization_config is not None else init_kwargs.get("quantization_config")
        kind = quantization_kind(requested)
        if kind is not None:
            require_bitsandbytes(f"{kind} loading (`load_in_{kind[0]}bit=True`)")
    check_adapter_conflict(model, peft_config, revision=init_kwargs.get("revision"))
    quantized = kind is not None or (not by_name and is_quantized(model))
    head = untrained_head(model) if peft_config is None and not by_name else None
    if head is not None:
        warnings.warn(
            f"The PeftModel given trains no reward head: `{head}` is not in its adapter's `modules_to_save`, so it "
            "stays as initialised (random, for a new reward model) and is not saved with the adapter. Pass the base "
            "model with `peft_config=` instead (MarsRewardTrainer then adds the head), or build the PeftModel with "
            "`mars_trl.peft.adapter_config.prepare_peft_config(config, model)`.",
            MarsPeftWarning,
            stacklevel=caller_stacklevel(),
        )
    if peft_config is None:
        if quantized and not has_adapter(model):
            raise ValueError(
                "The model is loaded in 4-bit/8-bit, whose weights cannot be trained directly: pass a `peft_config` "
                "to train a LoRA adapter on top (QLoRA), e.g. "
                "`peft.LoraConfig(task_type='SEQ_CLS', r=16, lora_alpha=32, target_modules='all-linear')`."
            )
        return model, quantization_config, peft_config
    peft_config = prepare_peft_config(peft_config, model, args)
    if by_name and kind is not None:
        model = load_kbit_reward_model(model, args, quantization_config)
        quantization_config = None
    elif quantized:
        model = prepare_kbit_model(model, args.gradient_checkpointing, args.gradient_checkpointing_kwargs)
    return model, quantization_config, peft_config
