"""k-bit (QLoRA / 8-bit) models: the bitsandbytes check, [`qlora_config`], k-bit preparation and loading for training."""

from __future__ import annotations

import importlib.util
import logging

import torch
from torch import nn

from .heads import RewardHeadNotFoundError, find_head_modules, unwrap_model

logger = logging.getLogger(__name__)


#: What to run when bitsandbytes (4-bit/8-bit loading) is missing.
QLORA_INSTALL_HINT = 'pip install "mars-trl[qlora]"'


# Set on a model once `prepare_model_for_kbit_training` has run on it.
_KBIT_PREPARED = "_mars_kbit_prepared"


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def require_bitsandbytes(what: str = "4-bit (QLoRA) loading") -> None:
    """Raise an `ImportError` naming the extra to install when bitsandbytes is missing."""
    if not bitsandbytes_available():
        raise ImportError(
            f"{what} needs the `bitsandbytes` package, which is not installed. Install the QLoRA extra: "
            f"{QLORA_INSTALL_HINT}"
        )


def quantization_kind(quantization_config) -> str | None:
    """'4-bit' / '8-bit' for a bitsandbytes config (object or dict), else None."""
    if quantization_config is None:
        return None
    get = (
        quantization_config.get
        if isinstance(quantization_config, dict)
        else (lambda key, default=None: getattr(quantization_config, key, default))
    )
    if get("load_in_4bit", False):
        return "4-bit"
    if get("load_in_8bit", False):
        return "8-bit"
    return None


def is_quantized(model) -> bool:
    model = unwrap_model(model) if isinstance(model, nn.Module) else model
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def default_compute_dtype() -> torch.dtype:
    """bf16 where the accelerator supports it, else fp32 (CPU, older GPUs)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def qlora_config(compute_dtype: torch.dtype | str | None = None, double_quant: bool = True, quant_type: str = "nf4"):
    """
    The QLoRA recipe as a `BitsAndBytesConfig`: 4-bit NF4 weights, double quantization, and bf16 compute where the
    device allows it (fp32 otherwise).

    Example:

    ```python
    from mars_trl import MarsRewardTrainer
    from mars_trl.peft.quantization import qlora_config

    trainer = MarsRewardTrainer(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        train_dataset=dataset,
        quantization_config=qlora_config(),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    ```
    """
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    if isinstance(compute_dtype, str):
        compute_dtype = getattr(torch, compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype or default_compute_dtype(),
    )


def kbit_device_map() -> dict[str, int] | None:
    """Each process loads its quantized copy onto its own accelerator; `None` on CPU."""
    from accelerate import PartialState

    state = PartialState()
    if state.device.type in ("cpu", "mps"):
        return None
    return {"": state.local_process_index}


def prepare_kbit_model(model, gradient_checkpointing: bool = False, gradient_checkpointing_kwargs=None):
    """
    `peft.prepare_model_for_kbit_training` once per model: freezes the base, keeps its non-quantized parameters
    (norms, embeddings, head) in fp32, and sets up gradient checkpointing with input gradients when asked.
    """
    from peft import prepare_model_for_kbit_training

    if not is_quantized(model):
        return model
    keep_4bit_weights_unpacked(model)
    if getattr(model, _KBIT_PREPARED, False):
        return model
    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs=gradient_checkpointing_kwargs,
    )
    setattr(model, _KBIT_PREPARED, True)
    return model


def keep_4bit_weights_unpacked(model) -> int:
    """
    Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel; returns the layers changed.

    On CPUs with AVX512-BF16, a `Linear4bit` that runs once in eval mode (MARS's margin scoring, evaluation) repacks
    its weight for a bf16 kernel and never unpacks it; the training steps after that run through a kernel with no
    backward, so gradients stop at every 4-bit layer and LoRA adapters below the last one stop learning (PyTorch
    warns "an autograd kernel was not registered"). The repacking also fails on layers narrower than 64 features.
    Models trained or reloaded by mars-trl keep the plain layout, so a reloaded adapter scores what the trained one
    did, at the cost of the bf16 kernel's speed on CPU. No effect on GPUs.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def skip_head_in_quantization(quantization_config, model_id: str, trust_remote_code: bool, revision=None):
    """
    A copy of a 4-bit/8-bit config that leaves the reward head unquantized, when the user named no skip modules.

    transformers keeps decoders' `score` in full precision but quantizes encoders' `classifier`; the head is trained
    in full (it is in `modules_to_save`), which fails on a quantized layer.
    """
    import copy

    if quantization_config is None or isinstance(quantization_config, dict):
        return quantization_config
    if getattr(quantization_config, "llm_int8_skip_modules", None) is not None:
        return quantization_config
    try:
        heads = find_head_modules(model_id, revision=revision, trust_remote_code=trust_remote_code)
    except (RewardHeadNotFoundError, OSError, ValueError, TypeError):
        return quantization_config
    config = copy.deepcopy(quantization_config)
    config.llm_int8_skip_modules = list(heads)
    return config


class _DropOnce(logging.Filter):
    """Swallows the next record containing `text` (accelerate may prefix a rank), then removes itself."""

    def __init__(self, target: logging.Logger, text: str):
        super().__init__()
        self.target, self.text = target, text

    def filter(self, record):
        if self.text in record.getMessage():
            self.target.removeFilter(self)
            return False
        return True


def load_kbit_reward_model(model_id: str, args, quantization_config):
    """
    Load `model_id` quantized, exactly as `RewardTrainer` would (its `model_init_kwargs`, `num_labels=1`, seed), then
    prepare it for k-bit training, so LoRA is added on a prepared model.
    """
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl.trainer.reward_trainer import suppress_seqcls_warning
    from trl.trainer.utils import create_model_from_path

    set_seed(args.seed)
    init_kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        if "quantization_config" in init_kwargs:
            raise ValueError(
                "You set `quantization_config` both as a trainer argument and in `args.model_init_kwargs`. "
                "Please set it in only one place, preferably as a trainer argument."
            )
        init_kwargs["quantization_config"] = quantization_config
    init_kwargs["quantization_config"] = skip_head_in_quantization(
        init_kwargs.get("quantization_config"), model_id, args.trust_remote_code, init_kwargs.get("revision")
    )
    if args.distributed_state.distributed_type == "DEEPSPEED":
        init_kwargs["device_map"] = None
    elif "device_map" not in init_kwargs:
        init_kwargs["device_map"] = kbit_device_map()
    init_kwargs["num_labels"] = 1
    init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    with suppress_seqcls_warning():
        model = create_model_from_path(model_id, AutoModelForSequenceClassification, **init_kwargs)
    model = prepare_kbit_model(model, args.gradient_checkpointing, args.gradient_checkpointing_kwargs)
    if args.model_init_kwargs is not None:
        # RewardTrainer would now say that `model_init_kwargs` are ignored; they were used, here.
        trl_logger = logging.getLogger("trl.trainer.reward_trainer")
        trl_logger.addFilter(_DropOnce(trl_logger, "You passed `model_init_kwargs`"))
    return model
