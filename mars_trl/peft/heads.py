"""Reward-head detection: which module of a sequence-classification model is its randomly initialised head."""

from __future__ import annotations

import copy
import functools
import os
import warnings

from torch import nn

#: Modules PEFT itself adds to `modules_to_save` for `task_type="SEQ_CLS"`.
PEFT_SEQ_CLS_HEADS = ("classifier", "score")


class RewardHeadNotFoundError(ValueError):
    """The scalar head of a reward model could not be located, so it cannot be trained and saved with an adapter."""


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _head_plan(model: nn.Module) -> tuple[list[str], list[str]]:
    """
    `(heads, clashing)`: the top-level modules outside the backbone that hold parameters, the scalar output layer
    last, and those of them whose name also ends the name of a backbone module (PEFT matches `modules_to_save` by
    suffix, so listing e.g. `dense` would unfreeze every `*.dense` of the backbone too).
    """
    model = unwrap_model(model)
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


def plan_heads(model, revision: str | None = None, trust_remote_code: bool = False) -> tuple[list[str], list[str]]:
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
    >>> from mars_trl.peft.heads import find_head_modules
    >>> find_head_modules("DistilBertForSequenceClassification")
    ['pre_classifier', 'classifier']
    ```
    """
    return plan_heads(model, revision, trust_remote_code)[0]


def find_reward_head(model, *, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """
    Name of the module that outputs the reward: `score` for Llama, Qwen, Mistral, GPT-2..., `classifier` for BERT,
    RoBERTa, DeBERTa..., `classification_head` for BART and T5. Takes what [`find_head_modules`] takes.

    Example:

    ```python
    >>> from mars_trl.peft.heads import find_reward_head
    >>> find_reward_head("LlamaForSequenceClassification"), find_reward_head("bert"), find_reward_head("bart")
    ('score', 'classifier', 'classification_head')
    ```
    """
    return find_head_modules(model, revision=revision, trust_remote_code=trust_remote_code)[-1]


def untrained_head(model) -> str | None:
    """For a `PeftModel` whose adapter config leaves the reward head out (frozen, not saved): the head's name."""
    from accelerate.utils import is_peft_model

    if not is_peft_model(model):
        return None
    try:
        head = plan_heads(model)[0][-1]
    except RewardHeadNotFoundError:
        return None
    module = getattr(unwrap_model(model), head, None)
    return None if module is None or type(module).__name__ == "ModulesToSaveWrapper" else head
