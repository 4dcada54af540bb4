"""Deprecated: `mars_trl.peft_utils` was split into `mars_trl.peft`'s modules (this alias goes in the next release)."""

from .deprecation import warn_moved

warn_moved(
    "mars_trl.peft_utils",
    "mars_trl.peft.heads, mars_trl.peft.adapter_config, mars_trl.peft.quantization, mars_trl.peft.loading, mars_trl.peft.training",
    stacklevel=3,
)


from .peft.adapter_config import MarsPeftWarning, prepare_peft_config  # noqa: E402
from .peft.heads import (  # noqa: E402
    PEFT_SEQ_CLS_HEADS,
    RewardHeadNotFoundError,
    find_head_modules,
    find_reward_head,
    untrained_head,
)
from .peft.loading import adapter_config_path, check_adapter_conflict, has_adapter, load_reward_model  # noqa: E402
from .peft.quantization import (  # noqa: E402
    QLORA_INSTALL_HINT,
    bitsandbytes_available,
    default_compute_dtype,
    is_quantized,
    kbit_device_map,
    keep_4bit_weights_unpacked,
    load_kbit_reward_model,
    prepare_kbit_model,
    qlora_config,
    require_bitsandbytes,
)
from .peft.training import prepare_peft_training  # noqa: E402

__all__ = [
    "MarsPeftWarning",
    "PEFT_SEQ_CLS_HEADS",
    "QLORA_INSTALL_HINT",
    "RewardHeadNotFoundError",
    "adapter_config_path",
    "bitsandbytes_available",
    "check_adapter_conflict",
    "default_compute_dtype",
    "find_head_modules",
    "find_reward_head",
    "has_adapter",
    "is_quantized",
    "kbit_device_map",
    "keep_4bit_weights_unpacked",
    "load_kbit_reward_model",
    "load_reward_model",
    "prepare_kbit_model",
    "prepare_peft_config",
    "prepare_peft_training",
    "qlora_config",
    "require_bitsandbytes",
    "untrained_head",
]
