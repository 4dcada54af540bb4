"""LoRA and QLoRA reward models that work the first time: the scalar head is always trained and saved.

A reward model is a backbone plus a small, randomly initialised head (`score` on decoders, `classifier` on BERT-style
encoders, `classification_head` on BART/T5, ...). With a PEFT adapter everything not listed in the adapter config is
frozen and left out of the saved adapter, so a `LoraConfig` without `task_type="SEQ_CLS"` (or with a head PEFT does
not know by name) trains a reward model whose head stays random and is lost on save. [`prepare_peft_config`] finds
the head of any sequence-classification architecture and fixes the config, with one warning;
[`prepare_peft_training`] is what [`MarsRewardTrainer`] runs before `RewardTrainer.__init__`: clear errors for the
usual mistakes, the head fix, and k-bit preparation of a 4-bit (QLoRA) or 8-bit base model.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import os
import warnings

import torch
from torch import nn

#: What to run when bitsandbytes (4-bit/8-bit loading) is missing.
QLORA_INSTALL_HINT = 'pip install "mars-trl[qlora]"'
#: Modules PEFT itself adds to `modules_to_save` for `task_type="SEQ_CLS"`.
PEFT_SEQ_CLS_HEADS = ("classifier", "score")
_SEQ_CLS = "SEQ_CLS"
# Set on a model once `prepare_model_for_kbit_training` has run on it.
_KBIT_PREPARED = "_mars_kbit_prepared"


class RewardHeadNotFoundError(ValueError):
    """The scalar head of a reward model could not be located, so it cannot be trained and saved with an adapter."""


class MarsPeftWarning(UserWarning):
    """A PEFT config was changed so the reward head is trained and saved."""


# -- head detection ---------------------------------------------------------------------------------------------------
def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _out_features(module: nn.Module) -> list[int]:
    sizes = []
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sizes.append(sub.out_features)
        elif type(sub).__name__ == "Conv1D" and hasattr(sub, "nf"):  # GPT-2 style
            sizes.append(sub.nf)
    return sizes


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _head_plan(model: nn.Module) -> tuple[list[str], list[str]]:
    """
    `(heads, clashing)`: the top-level modules outside the backbone that hold parameters, the scalar output layer
    last, and those of them whose name also ends the name of a backbone module (PEFT matches `modules_to_save` by
    suffix, so listing e.g. `dense` would unfreeze every `*.dense` of the backbone too).
    """
    model = _unwrap(model)
    children = [(name, module) for name, module in model.named_children() if _has_parameters(module)]
    names = [name for name, _ in children]
    prefix = getattr(model, "base_model_prefix", "") or ""
    if prefix in names:
        backbone = prefix
    elif prefix or len(children) < 2:
        # A transformers model without its own backbone attribute is the backbone itself (LlamaModel, BertModel).
        backbone = None
        children = []
    else:  # no declared backbone: the largest child is
        backbone = max(children, key=lambda child: sum(p.numel() for p in child[1].parameters()))[0]
    heads = [(name, module) for name, module in children if name != backbone]
    if not heads:
        raise RewardHeadNotFoundError(
            f"Could not find the reward head of {type(model).__name__}: it has no module with parameters outside a "
            f"backbone (top-level modules: {names}). Is it a sequence-classification model "
            "(AutoModelForSequenceClassification, num_labels=1)? If its scalar head lives elsewhere, name it in the "
            "PEFT config yourself: `LoraConfig(task_type='SEQ_CLS', modules_to_save=['<head module>'], ...)`."
        )
    num_labels = getattr(getattr(model, "config", None), "num_labels", 1) or 1
    # The output layer: the last head module that ends in a projection to `num_labels` outputs.
    output = [name for name, module in heads if (_out_features(module) or [None])[-1] == num_labels]
    primary = output[-1] if output else heads[-1][0]
    ordered = [name for name, _ in heads if name != primary] + [primary]
    keys = [key for key, _ in model.named_modules()]
    backbone_keys = [key for key in keys if key and not any(key == h or key.startswith(h + ".") for h in ordered)]
    clashing = [name for name in ordered if any(key.endswith(name) for key in backbone_keys)]
    return ordered, clashing


@functools.lru_cache(maxsize=64)
def _plan_of_name(name: str, revision: str | None, trust_remote_code: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = getattr(transformers, name, None)
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        config = cls.config_class()
    else:
        cls = None
        if name in CONFIG_MAPPING:  # a model type such as "llama" or "bert"
            config = AutoConfig.for_model(name)
        else:  # a local directory or a Hub id: only the config is read
            config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    heads, clashing = _plan_of_config(config, cls, trust_remote_code)
    return tuple(heads), tuple(clashing)


def _plan_of_config(config, cls=None, trust_remote_code: bool = False) -> tuple[list[str], list[str]]:
    """The head plan of the model `config` describes, built on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = 1
    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cls is not None:
            model = cls(config)
        else:
            model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    return _head_plan(model)


def _plan(model, revision: str | None = None, trust_remote_code: bool = False) -> tuple[list[str], list[str]]:
    from transformers import PretrainedConfig

    if isinstance(model, nn.Module):
        return _head_plan(model)
    if isinstance(model, PretrainedConfig):
        return _plan_of_config(model, trust_remote_code=trust_remote_code)
    if isinstance(model, (str, os.PathLike)):
        try:
            heads, clashing = _plan_of_name(str(model), revision, trust_remote_code)
        except RewardHeadNotFoundError:
            raise
        except Exception as error:
            raise RewardHeadNotFoundError(
                f"Could not find the reward head of `{model}`: reading its config failed ({type(error).__name__}: "
                f"{error}). Pass the loaded model instead, or name the head in the PEFT config "
                "(`modules_to_save=['score']` for decoders, `['classifier']` for BERT-style encoders)."
            ) from error
        return list(heads), list(clashing)
    raise TypeError(f"Expected a model, a config or a model name/path, got {type(model).__name__}.")


def find_head_modules(model, *, revision: str | None = None, trust_remote_code: bool = False) -> list[str]:
    """
    Names of the reward model's head modules: every top-level module outside the backbone that has parameters
    (e.g. DistilBERT's `pre_classifier` and `classifier`), the scalar output layer last.

    `model` is a model (optionally PEFT-wrapped), a `PretrainedConfig`, an architecture class name, a model type, or
    a local path / Hub id (only its config is read; nothing is downloaded beyond it, no weights are loaded).

    Example:

    ```python
    >>> from mars_trl.peft_utils import find_head_modules
    >>> find_head_modules("DistilBertForSequenceClassification")
    ['pre_classifier', 'classifier']
    ```
    """
    return _plan(model, revision, trust_remote_code)[0]


def find_reward_head(model, *, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """
    Name of the module that outputs the reward: `score` for Llama, Qwen, Mistral, GPT-2..., `classifier` for BERT,
    RoBERTa, DeBERTa..., `classification_head` for BART and T5. Takes what [`find_head_modules`] takes.

    Example:

    ```python
    >>> from mars_trl.peft_utils import find_reward_head
    >>> find_reward_head("LlamaForSequenceClassification"), find_reward_head("bert"), find_reward_head("bart")
    ('score', 'classifier', 'classification_head')
    ```
    """
    return find_head_modules(model, revision=revision, trust_remote_code=trust_remote_code)[-1]


def _caller_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first frame outside this package (the user's call)."""
    import inspect

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


# -- PEFT config ------------------------------------------------------------------------------------------------------
def _task_type(peft_config) -> str | None:
    task = getattr(peft_config, "task_type", None)
    return getattr(task, "value", task)


def prepare_peft_config(peft_config, model, args=None):
    """
    A copy of `peft_config` with which the reward head is trained and saved: `task_type="SEQ_CLS"` and every head
    module in `modules_to_save`. If the config as given would have left the head frozen (and out of the saved
    adapter), one [`MarsPeftWarning`] says what was changed. `model` is the model or its name/path (see
    [`find_head_modules`]); `args` (a `RewardConfig`) supplies the revision and `trust_remote_code` used to read a
    named model's config. Returns `None` for `None`.

    Example:

    ```python
    >>> import warnings
    >>> from peft import LoraConfig
    >>> from mars_trl.peft_utils import prepare_peft_config
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     fixed = prepare_peft_config(LoraConfig(r=8, target_modules=["q_proj"]), "LlamaForSequenceClassification")
    >>> fixed.task_type, fixed.modules_to_save, len(caught)
    ('SEQ_CLS', ['score'], 1)
    ```
    """
    if peft_config is None or not hasattr(peft_config, "peft_type"):
        return peft_config  # None, or not a PeftConfig (RewardTrainer raises its own TypeError)
    config = copy.deepcopy(peft_config)
    task = _task_type(config)
    given = list(getattr(config, "modules_to_save", None) or [])
    init_kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    try:
        heads, clashing = _plan(
            model,
            revision=init_kwargs.get("revision"),
            trust_remote_code=bool(init_kwargs.get("trust_remote_code", getattr(args, "trust_remote_code", False))),
        )
    except RewardHeadNotFoundError:
        if not given:
            raise
        # The user named the head; trust it.
        heads, clashing = [], []
    head = heads[-1] if heads else given[-1]
    # An extra head module whose name also ends a backbone module's cannot be listed without unfreezing those too.
    skipped = [name for name in heads[:-1] if name in clashing]
    wanted = [name for name in heads if name not in skipped]
    covered = set(given) | (set(PEFT_SEQ_CLS_HEADS) if task == _SEQ_CLS else set())
    # PEFT matches `modules_to_save` entries as suffixes of module names.
    missing = [name for name in wanted if not any(name.endswith(entry) for entry in covered)]
    changes = []
    if task != _SEQ_CLS:
        config.task_type = _SEQ_CLS
        if task is not None or missing:
            changes.append(f"task_type={task!r} -> 'SEQ_CLS'")
    to_add = [name for name in wanted if name not in given]
    if to_add:
        if not hasattr(config, "modules_to_save"):
            raise ValueError(
                f"{type(peft_config).__name__} has no `modules_to_save`, so the reward head `{head}` would stay "
                "random and would not be saved with the adapter. Use a LoRA-family config (e.g. `peft.LoraConfig`)."
            )
        config.modules_to_save = given + to_add
    if missing:
        changes.append(
            f"modules_to_save={getattr(peft_config, 'modules_to_save', None)!r} -> {config.modules_to_save!r}"
        )
    if changes:
        note = f" Kept frozen (their names also match backbone modules): {skipped}." if skipped else ""
        warnings.warn(
            f"peft_config changed so the reward head `{head}` is trained and saved with the adapter: "
            f"{'; '.join(changes)}. As given, the randomly initialised head would have stayed frozen and been left "
            f"out of the saved adapter. Set these in your PEFT config to silence this warning.{note}",
            MarsPeftWarning,
            stacklevel=_caller_stacklevel(),
        )
    return config


# -- quantization -----------------------------------------------------------------------------------------------------
def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def require_bitsandbytes(what: str = "4-bit (QLoRA) loading") -> None:
    """Raise an `ImportError` naming the extra to install when bitsandbytes is missing."""
    if not bitsandbytes_available():
        raise ImportError(
            f"{what} needs the `bitsandbytes` package, which is not installed. Install the QLoRA extra: "
            f"{QLORA_INSTALL_HINT}"
        )


def _quantization_kind(quantization_config) -> str | None:
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
    model = _unwrap(model) if isinstance(model, nn.Module) else model
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
    from mars_trl.peft_utils import qlora_config

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


def _skip_head_in_quantization(quantization_config, model_id: str, trust_remote_code: bool, revision=None):
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
    init_kwargs["quantization_config"] = _skip_head_in_quantization(
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


# -- adapters ---------------------------------------------------------------------------------------------------------
def adapter_config_path(model, revision: str | None = None) -> str | None:
    """The `adapter_config.json` of `model` when it names a saved PEFT adapter (local folder or cached Hub repo)."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = os.path.join(str(model), "adapter_config.json")
    if os.path.isfile(path):
        return path
    if os.path.isdir(str(model)):
        return None
    try:
        from transformers.utils.peft_utils import find_adapter_config_file

        return find_adapter_config_file(str(model), revision=revision)
    except Exception:
        return None


def has_adapter(model) -> bool:
    from accelerate.utils import is_peft_model

    if isinstance(model, nn.Module):
        return bool(is_peft_model(model) or getattr(model, "_hf_peft_config_loaded", False))
    return adapter_config_path(model) is not None


def check_adapter_conflict(model, peft_config, revision: str | None = None) -> None:
    """Raise a `ValueError` when `model` already carries an adapter and `peft_config` would stack another on it."""
    if peft_config is None or not has_adapter(model):
        return
    what = (
        f"`{model}` is a saved PEFT adapter"
        if isinstance(model, (str, os.PathLike))
        else (f"the model ({type(model).__name__}) already has a PEFT adapter")
    )
    name = model if isinstance(model, (str, os.PathLike)) else "<adapter dir>"
    raise ValueError(
        f"Both an adapter and a `peft_config` were given: {what}, and a second adapter would be stacked on it. "
        f"Either continue training that adapter: drop `peft_config` and pass "
        f"`model=mars_trl.peft_utils.load_reward_model('{name}', is_trainable=True)`; or start a new adapter on "
        f"the merged model: `mars-trl merge {name} merged/` (or `mars_trl.merge.merge_adapter`), then "
        "`model='merged/'` with your `peft_config`."
    )


def _tokenizer_pad_id(path: str, trust_remote_code: bool) -> int | None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception:
        return None
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def load_reward_model(
    path: str,
    *,
    base_model: str | None = None,
    quantization_config=None,
    dtype: torch.dtype | str = torch.float32,
    is_trainable: bool = False,
    device_map=None,
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """
    Load a reward model for scoring (or, with `is_trainable=True`, to continue training its adapter).

    A folder written by `trainer.save_model()` after PEFT training holds the adapter and the trained head; it is put
    back on its base model (`base_model`, default: the one recorded in `adapter_config.json`), loaded with
    `num_labels=1` and, for a QLoRA adapter, the same `quantization_config` as in training. A full checkpoint (e.g. a
    merged one) is loaded as an `AutoModelForSequenceClassification`. The pad token id of the tokenizer saved next to
    the weights is set on the config, so batched scoring works.
    """
    import json

    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if _quantization_kind(quantization_config):
        require_bitsandbytes()
    kwargs = dict(
        num_labels=1,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
        revision=revision,
    )
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    adapter_config = adapter_config_path(path, revision=revision)
    if adapter_config is None:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    else:
        from peft import PeftModel

        with open(adapter_config) as f:
            recorded = json.load(f).get("base_model_name_or_path")
        base = base_model or recorded
        if not base:
            raise ValueError(
                f"The adapter in `{path}` does not record its base model (it was trained on a model object built in "
                "memory): pass `base_model=` (the base checkpoint's path or Hub id)."
            )
        base_kwargs = dict(kwargs, revision=None)
        if "quantization_config" in base_kwargs:  # the head unquantized, as in training
            base_kwargs["quantization_config"] = _skip_head_in_quantization(
                quantization_config, base, trust_remote_code
            )
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(base, **base_kwargs)
        if quantization_config is not None and is_trainable:
            model = prepare_kbit_model(model)
        model = PeftModel.from_pretrained(model, path, is_trainable=is_trainable, revision=revision)
    keep_4bit_weights_unpacked(model)
    pad_id = _tokenizer_pad_id(path, trust_remote_code)
    if pad_id is not None:
        _unwrap(model).config.pad_token_id = pad_id
    if not is_trainable:
        model.eval()
    return model


def untrained_head(model) -> str | None:
    """For a `PeftModel` whose adapter config leaves the reward head out (frozen, not saved): the head's name."""
    from accelerate.utils import is_peft_model

    if not is_peft_model(model):
        return None
    try:
        head = _plan(model)[0][-1]
    except RewardHeadNotFoundError:
        return None
    module = getattr(_unwrap(model), head, None)
    return None if module is None or type(module).__name__ == "ModulesToSaveWrapper" else head


# -- the trainer's entry point ----------------------------------------------------------------------------------------
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
        kind = _quantization_kind(requested)
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
            "`mars_trl.peft_utils.prepare_peft_config(config, model)`.",
            MarsPeftWarning,
            stacklevel=_caller_stacklevel(),
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

