"""`MarsRewardTrainer`: TRL's `RewardTrainer` with margin-aware sampling, as a drop-in replacement."""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import RewardTrainer

from .config import MarsConfig, mars_arguments_from
from .data.preparation import empty_eos, ensure_chat_template, truncate_dataset
from .data.validation import validate_preference_dataset, validate_prepared_dataset
from .names import INDEX_COLUMN, LOSS_MARGIN, RAW_ROW_COLUMN
from .peft.training import prepare_peft_training
from .refinement.callback import MarsCallback
from .refinement.checkpoint import STATE_FILE, MarsStateError, has_state
from .refinement.pool import PairPool
from .refinement.rounds import Refiner
from .refinement.run_state import save_run_state
from .sampling.sampler import MarginAwareSampler
from .sampling.schedule import RunPlan, plan_for_steps, plan_run
from .sampling.scoring import gather_indexed

if TYPE_CHECKING:
    from datasets import DatasetDict, IterableDatasetDict
    from peft import PeftConfig, PeftModel
    from transformers import (
        BitsAndBytesConfig,
        DataCollator,
        EvalPrediction,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        TrainerCallback,
    )
    from trl import RewardConfig

    from .augment import Augmenter
    from .semantic.sharpener import SemanticSharpener

logger = logging.getLogger(__name__)

#: Entry a MARS run adds to `trainer_state.json` of each checkpoint: the trainer state itself says MARS wrote it.
MARS_STATE_MARKER = "MarsRewardTrainer"


MARS_CITATION = """\
@article{mars2026,
    title   = {{MARS: Margin-Aware Reward-Modeling with Self-Refinement}},
    journal = {arXiv preprint arXiv:2602.17658},
    year    = {2026}
}"""


def last_complete_checkpoint(output_dir: str) -> str | None:
    """
    The newest checkpoint that was written to the end. A run killed while saving leaves a newer folder without
    `trainer_state.json` (Trainer writes it last); `get_last_checkpoint` would pick it and the resume would fail.
    """
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, path in sorted(found, reverse=True):
        if os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            return path
        logger.warning(
            f"Skipping incomplete checkpoint {path}: no {TRAINER_STATE_NAME} (the run stopped while saving)."
        )
    return None


def cpu_runs_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively, as oneDNN counts it (AVX-512 BW/VL/DQ and newer, or ARM bf16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return "AVX512" in torch.backends.cpu.get_cpu_capability()


def written_by_mars(checkpoint: str) -> bool:
    """Whether `checkpoint`'s trainer state says a MARS run wrote it (its marker, or MARS figures in its log)."""
    import json

    try:
        with open(os.path.join(checkpoint, TRAINER_STATE_NAME), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return False
    if MARS_STATE_MARKER in (state.get("stateful_callbacks") or {}):
        return True
    return any(key.startswith("mars/") for entry in state.get("log_history") or [] for key in entry)


class _IndexCarryingCollator:
    """Wraps any preference collator: strips the pair index before it, re-attaches it as a tensor after."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples):
        if not examples or INDEX_COLUMN not in examples[0]:
            return self.base(examples)
        index = torch.tensor([example[INDEX_COLUMN] for example in examples], dtype=torch.long)
        batch = self.base([{k: v for k, v in example.items() if k != INDEX_COLUMN} for example in examples])
        batch[INDEX_COLUMN] = index
        return batch


class MarsRewardTrainer(RewardTrainer):
    """
    Drop-in replacement for `trl.RewardTrainer` that trains with MARS (arXiv 2602.17658).

    It takes the same arguments as `RewardTrainer` and accepts either a [`MarsConfig`] or a plain `RewardConfig`
    (then the MARS defaults of [`MarsArguments`] apply). At the start of each epoch after the warm-up it re-scores
    the margin D_i = r(chosen_i) - r(rejected_i) of the training pairs with the current model and weights them by
    softmax(-tau * D) mixed with a uniform floor, so ambiguous and mis-ranked pairs, where the Bradley-Terry loss has
    most curvature, get the augmentation budget (with an augmenter) and any extra draws (`margin_extra_fraction`).
    Each epoch visits every pair of the pool (labelled plus augmented so far) once, as the authors train on D u S;
    the growth is planned at train start, so `max_steps`, the LR schedule and the progress bar are right from step 0
    (`epoch_length="fixed"` keeps `RewardTrainer`'s step count). With `use_mars=False` it *is* `RewardTrainer`.

    Example:

    ```python
    from datasets import load_dataset
    from mars_trl import MarsConfig, MarsRewardTrainer

    dataset = load_dataset("trl-lib/ultrafeedback_binarized", split="train")
    trainer = MarsRewardTrainer(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        args=MarsConfig(output_dir="Qwen2.5-0.5B-Reward-MARS", margin_tau=0.5),
        train_dataset=dataset,
    )
    trainer.train()
    ```

    A streaming `IterableDataset` cannot be sampled by weight: the trainer then warns and behaves exactly like
    `RewardTrainer`.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Model to be trained, as for `RewardTrainer`: a model id or local path (loaded with
            `AutoModelForSequenceClassification.from_pretrained` and `args.model_init_kwargs`), a sequence
            classification [`~transformers.PreTrainedModel`], or a sequence classification [`~peft.PeftModel`].
        args ([`MarsConfig`] or `RewardConfig`, *optional*):
            Configuration for this trainer. A plain `RewardConfig` trains with the MARS defaults of [`MarsArguments`].
            If `None`, a default `MarsConfig` is used, with `output_dir` named after the model.
        data_collator (`DataCollator`, *optional*):
            Function that forms a batch from a list of prepared examples. Defaults to TRL's
            `DataCollatorForPreference`; MARS wraps it so that each pair's pool index travels with the batch.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Preference pairs in any of TRL's formats (standard or conversational, explicit or implicit prompt), or
            already tokenized with `chosen_ids` and `rejected_ids`. An optional `margin` column is TRL's per-pair target
            margin. A streaming dataset trains exactly as with `RewardTrainer` (MARS needs random access).
        eval_dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`], [`~datasets.DatasetDict`], [`~datasets.IterableDatasetDict`] or `dict[str, Dataset | IterableDataset]`, *optional*):
            Dataset to use for evaluation, with the same requirements as `train_dataset`.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer used to process the data. If `None`, it is loaded from the model's name. A padding token must be
            set (`eos_token` is used when it is not).
        compute_metrics (`Callable[[EvalPrediction], dict]`, *optional*):
            Function computing metrics at evaluation, as for `transformers.Trainer`.
        callbacks (list of [`~transformers.TrainerCallback`], *optional*):
            Callbacks added to the default ones; the trainer adds its own [`MarsCallback`] too.
        optimizers (`tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None]`, *optional*, defaults to `(None, None)`):
            The optimizer and the scheduler to use. Defaults to `AdamW` and the schedule given by `args`.
        optimizer_cls_and_kwargs (`tuple[Type[torch.optim.Optimizer], Dict[str, Any]]`, *optional*):
            Optimizer class and keyword arguments, overriding `optim` and `optim_args` in `args`. Incompatible with
            `optimizers`.
        preprocess_logits_for_metrics (`Callable[[torch.Tensor, torch.Tensor], torch.Tensor]`, *optional*):
            Function that preprocesses the logits before they are cached at each evaluation step.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization used when loading the model from an id or path; with `peft_config`, QLoRA training (the
            base model is prepared for k-bit training and the reward head kept out of quantization).
        peft_config ([`~peft.PeftConfig`], *optional*):
            PEFT configuration used to wrap the model. A config that would leave the reward head untrained and unsaved
            (no `task_type="SEQ_CLS"`, or a head PEFT does not know by name) is fixed, with one warning.
        augmenter ([`~mars_trl.augment.Augmenter`] or `Callable[[list[dict], int], list[list[dict]]]`, *optional*):
            What generates the variants of the augmentation rounds, overriding `args.augmenter`: any
            [`~mars_trl.augment.Augmenter`], or a function `fn(pairs, k)` returning up to `k` variants per pair (in
            the pairs' own format). Used only when the config enables augmentation (`augment_ratio > 0` and
            `augment_strategy != "none"`); without either, no rounds run.
        sharpener ([`~mars_trl.semantic.SemanticSharpener`] or any object with `sharpen(pairs)`, *optional*):
            The semantic layer (MARS v2) that rewrites semantically close pairs before they are augmented, overriding
            the one the `semantic_*` settings describe (`semantic_refine=True`). Any object with
            `sharpen(pairs) -> (pairs, counts)` works; its `fit(pairs)`, if any, runs once on the labelled pairs. It
            runs only with an augmenter.
    """

    _tag_names = ["trl", "reward-trainer", "mars"]
    _name = "MARS Reward"
    _paper = {
        "title": "MARS: Margin-Aware Reward-Modeling with Self-Refinement",
        "id": "2602.17658",
        "citation": MARS_CITATION,
    }

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        args: MarsConfig | RewardConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset
        | IterableDataset
        | DatasetDict
        | IterableDatasetDict
        | dict[str, Dataset | IterableDataset]
        | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        quantization_config: BitsAndBytesConfig | None = None,
        peft_config: PeftConfig | None = None,
        augmenter: Augmenter | Callable[[list[dict], int], list[list[dict]]] | None = None,
        sharpener: SemanticSharpener | Any | None = None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else model.config._name_or_path
            args = MarsConfig(f"{model_name.split('/')[-1]}-Reward")
        self.mars_args = mars_arguments_from(args)
        #: Pairs fitted into `max_length` per prepared dataset ("train", "eval", "augmented"), with
        #: `max_length_policy="truncate"`.
        self.truncated_max_length: dict[str, int] = {}
        self._mars_sampler: MarginAwareSampler | None = None
        self._mars_callback: MarsCallback | None = None
        self._mars_resume_dir: str | None = None
        self._mars_pool: PairPool | None = None
        self._mars_refiner: Refiner | None = None
        self._mars_plan: RunPlan | None = None
        # Batches and optimizer steps of each planned pool epoch (empty with `epoch_length="fixed"`).
        self._mars_batches: list[int] = []
        self._mars_deferred_logs: dict[str, float] = {}
        self._mars_updates: list[int] = []
        streaming = isinstance(train_dataset, IterableDataset)
        self._mars_active = bool(self.mars_args.use_mars) and not streaming
        if self.mars_args.use_mars and streaming:
            warnings.warn(
                "MarsRewardTrainer got an IterableDataset (streaming): pairs cannot be re-weighted without random "
                "access, so it trains exactly like trl.RewardTrainer. Load the dataset without `streaming=True` "
                "(or call `.to_list()`/`Dataset.from_generator`) to train with MARS.",
                UserWarning,
                stacklevel=2,
            )
        if isinstance(train_dataset, Dataset) and self._mars_active:
            for reserved in (INDEX_COLUMN, RAW_ROW_COLUMN):
                if reserved in train_dataset.column_names:
                    raise ValueError(
                        f"The training dataset has a column named `{reserved}`, which MarsRewardTrainer reserves: "
                        f"rename it (e.g. `dataset.rename_column('{reserved}', 'orig_{reserved}')`)."
                    )
        validate_preference_dataset(train_dataset, "train")
        if isinstance(eval_dataset, dict):
            for key, dataset in eval_dataset.items():
                validate_preference_dataset(dataset, f"eval `{key}`")
        elif eval_dataset is not None:
            validate_preference_dataset(eval_dataset, "eval")
        augmenter = self._resolve_augmenter(augmenter, args)
        self._mars_raw: Dataset | None = None
        if augmenter is not None:
            names = train_dataset.column_names
            if "chosen" not in names or "rejected" not in names:
                raise ValueError(
                    f"Augmentation rewrites the text of each pair, but the training dataset has columns {names} "
                    "(pre-tokenized?). Pass the text columns `chosen`/`rejected` (and `prompt`), or turn augmentation "
                    "off (`augmenter=None` or `augment_strategy='none'`)."
                )
            train_dataset = train_dataset.add_column(RAW_ROW_COLUMN, np.arange(len(train_dataset)))
            self._mars_raw = train_dataset
        # LoRA/QLoRA: clear errors, a peft_config that trains and saves the reward head, k-bit preparation.
        model, quantization_config, peft_config = prepare_peft_training(model, args, quantization_config, peft_config)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )

        self._match_quantized_trainable_dtype()
        validate_prepared_dataset(self.train_dataset, self.args.max_length, "train")
        self.dropped_max_length = self._count_dropped(train_dataset)
        if not self._mars_active:
            return
        if self.args.train_sampling_strategy not in (None, "random"):
            logger.warning(
                f"`train_sampling_strategy={self.args.train_sampling_strategy!r}` is replaced by MARS's margin-aware "
                "sampler. Set `use_mars=False` to keep it."
            )
        self.train_dataset = self.train_dataset.add_column(INDEX_COLUMN, np.arange(len(self.train_dataset)))
        self.data_collator = _IndexCarryingCollator(self.data_collator)
        columns = None
        if self.args.remove_unused_columns:
            self._set_signature_columns_if_needed()
            columns = tuple(self._signature_columns)
        self._mars_pool = PairPool(self.train_dataset, INDEX_COLUMN, extra_columns=(LOSS_MARGIN,), columns=columns)
        self._mars_refiner = None
        if augmenter is not None:
            if self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0:
                raise ValueError(
                    "Augmentation grows the training pool between epochs, which persistent dataloader workers would "
                    "never see: set `dataloader_persistent_workers=False`."
                )
            raw_rows = np.asarray(self.train_dataset.with_format(None)[RAW_ROW_COLUMN], dtype=np.int64)
            self._mars_refiner = Refiner(self, augmenter, self._mars_pool, self._mars_raw, raw_rows)
            if sharpener is not None or self.mars_args.semantic_refine:
                from .semantic.from_config import attach_sharpener

                # MARS v2 semantic layer: refines each pair once before its variants; fit() sees every labelled pair.
                attach_sharpener(self._mars_refiner, sharpener)
        elif sharpener is not None or self.mars_args.semantic_refine:
            logger.warning(
                "The semantic layer (`sharpener=` / `semantic_refine`) runs only with an augmenter: ignored."
            )
        if self.mars_args.margin_scoring_precision == "bf16" and self.args.device.type == "cuda":
            if not torch.cuda.is_bf16_supported():
                raise ValueError(
                    "`margin_scoring_precision='bf16'` needs a GPU with bfloat16 support (Ampere or newer), and "
                    f"{torch.cuda.get_device_name()} has none: use 'auto' (score in the training's precision)."
                )
        if self.mars_args.margin_scoring_precision == "bf16" and self.args.device.type == "cpu":
            if not cpu_runs_bf16():
                # It still works, emulated: correct margins, but slower than fp32 instead of faster.
                warnings.warn(
                    "`margin_scoring_precision='bf16'` on a CPU without bfloat16 instructions (no AVX-512 BW/VL/DQ, "
                    f"AVX512-BF16 or AMX; torch reports {torch.backends.cpu.get_cpu_capability()}): bf16 is emulated "
                    "there and the scoring pass runs several times slower than in fp32. Use 'auto' on this machine.",
                    UserWarning,
                    stacklevel=2,
                )
        self._mars_callback = MarsCallback(self)
        self.add_callback(self._mars_callback)
        if self.mars_args.margin_sampling and self.args.num_train_epochs <= self.mars_args.margin_warmup_epochs:
            if self.args.max_steps is None or self.args.max_steps <= 0:
                logger.warning(
                    f"num_train_epochs={self.args.num_train_epochs} <= margin_warmup_epochs="
                    f"{self.mars_args.margin_warmup_epochs}: margin-aware sampling never starts. Train longer or "
                    "lower `margin_warmup_epochs`."
                )

    def _count_dropped(self, given) -> int:
        """Labelled pairs RewardTrainer's preparation left out for `max_length`; warns once when there are any."""
        if not isinstance(given, Dataset) or not isinstance(self.train_dataset, Dataset):
            return 0
        dropped = len(given) - len(self.train_dataset)
        if dropped > 0:
            logger.warning(
                f"{dropped} of {len(given)} training pairs have a side longer than max_length={self.args.max_length} "
                "tokens and were left out, as RewardTrainer leaves them out (its `max_length` help says "
                "'truncated'; they are dropped). Raise `max_length` (or set it to None) to train on them, or shorten "
                "the data."
            )
        return dropped

    def _match_quantized_trainable_dtype(self) -> None:
        # TRL casts every trainable parameter of a quantized model to bf16 (the QLoRA recipe). Without bf16 mixed
        # precision (CPU, or GPUs without bf16) the fp32 hidden states then meet a bf16 head and the first step fails
        # with a dtype mismatch; bring the trainable parameters back to the 4-bit compute dtype instead.
        model = self.model
        if self.args.bf16 or not (
            getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        ):
            return
        quant = getattr(model.config, "quantization_config", None)
        compute = getattr(quant, "bnb_4bit_compute_dtype", None) if quant is not None else None
        if isinstance(quant, dict):
            compute = quant.get("bnb_4bit_compute_dtype")
        if isinstance(compute, str):
            compute = getattr(torch, compute.replace("torch.", ""), None)
        target = compute if compute in (torch.float16, torch.float32) else torch.float32
        for param in model.parameters():
            if param.requires_grad and param.dtype == torch.bfloat16:
                param.data = param.data.to(target)

    def _resolve_augmenter(self, augmenter, args):
        """The augmenter object for this run: the `augmenter=` argument, else the one named in the config."""
        mars = self.mars_args
        if not self._mars_active or not mars.augmentation_enabled:
            return None
        if augmenter is not None:
            return augmenter
        if mars.augmenter == "perturbation":
            from .augment import PerturbationAugmenter

            return PerturbationAugmenter(seed=args.seed)
        if mars.augmenter == "paraphrase":
            from .augment import ParaphraseAugmenter

            kwargs = {"model": mars.augmenter_model} if mars.augmenter_model else {}
            # Each process generates its shard on its own accelerator, as the semantic layer does.
            return ParaphraseAugmenter(device=args.device, **kwargs)
        if mars.augmenter == "lm_paraphrase":
            from .augment import LMParaphraseAugmenter, MeaningFilter

            meaning_filter = None
            if mars.augment_min_similarity is not None:
                from .semantic.embedder import Embedder

                embedder = Embedder(mars.semantic_embedder, batch_size=mars.semantic_embed_batch_size)
                meaning_filter = MeaningFilter(embedder, mars.augment_min_similarity)
            return LMParaphraseAugmenter(
                mars.augmenter_model,
                gguf_file=mars.augmenter_gguf_file,
                meaning_filter=meaning_filter,
                seed=args.seed,
                device=args.device,
            )
        return None

    @property
    def pool(self) -> PairPool | None:
        """The training pool: labelled pairs, then augmented pairs with provenance (None when MARS is off)."""
        return self._mars_pool

    def get_train_dataloader(self):
        if not self._mars_active:
            return super().get_train_dataloader()
        # The pool, not `train_dataset`: it grows between epochs while the dataloader and its sampler stay.
        return self._get_dataloader(
            dataset=self._mars_pool,
            description="Training",
            batch_size=self._train_batch_size,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    # -- data -----------------------------------------------------------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        ensure_chat_template(dataset, processing_class)
        limit = args.max_length
        truncate = self.mars_args.max_length_policy == "truncate" and limit is not None
        # RewardTrainer filters by `args.max_length` as its last step: to truncate, prepare without it, then fit.
        args.max_length = None if truncate else limit
        try:
            with empty_eos(processing_class):
                prepared = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        finally:
            args.max_length = limit
        if not truncate:
            return prepared
        prepared, count = truncate_dataset(prepared, limit, processing_class.all_special_ids, dataset_name)
        self.truncated_max_length[dataset_name] = self.truncated_max_length.get(dataset_name, 0) + count
        if count and dataset_name != "augmented":
            logger.warning(
                f"{count} {dataset_name} pairs have a side longer than max_length={limit} tokens and were truncated "
                "(`max_length_policy='truncate'`: the shared prompt's oldest tokens first, then the responses' tails)."
            )
        return prepared

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._mars_active and INDEX_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX_COLUMN]

    def _get_train_sampler(self, train_dataset=None):
        if not self._mars_active:
            return super()._get_train_sampler(train_dataset)
        # Each epoch's length comes from the run's plan (`set_initial_training_values`); until then, the labelled set.
        dataset = self._mars_pool
        if self._mars_sampler is None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            mars = self.mars_args
            fixed = mars.epoch_length == "fixed"
            self._mars_sampler = MarginAwareSampler(
                num_pairs=len(dataset),
                num_samples=(mars.margin_num_samples if fixed else None) or dataset.num_labelled,
                seed=seed,
                coverage=not fixed,
            )
        return self._mars_sampler

    # -- the planned run ------------------------------------------------------------------------------------------
    @property
    def run_plan(self) -> RunPlan | None:
        """The plan of the current `train()` call: pairs per epoch, augmentation rounds and budgets (None before)."""
        return self._mars_plan

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        if not self._mars_active:
            return values
        num_epochs, updates, num_examples, num_samples, total_batch_size, batches, max_steps = values
        mars, sampler, num_labelled = self.mars_args, self._mars_sampler, self._mars_pool.num_labelled
        augmenting = self._mars_refiner is not None

        def batches_for(samples: int) -> int:
            # Asked of the prepared dataloader itself, so sharding, `drop_last` and batch size all count as Trainer
            # counts them.
            sampler.set_length(samples)
            return len(dataloader)

        def updates_from(batches: int) -> int:  # as Trainer counts an epoch's optimizer steps
            accumulation = args.gradient_accumulation_steps
            return max(batches // accumulation + int(batches % accumulation > 0), 1)

        def updates_for(samples: int) -> int:
            return updates_from(batches_for(samples))

        if mars.epoch_length == "fixed":
            plan = plan_run(mars, num_labelled, num_epochs, augmenting)
        elif args.max_steps > 0:
            plan = plan_for_steps(mars, num_labelled, augmenting, updates_for, args.max_steps)
        else:
            plan = plan_run(mars, num_labelled, math.ceil(args.num_train_epochs), augmenting)
        self._mars_plan = plan
        warmup = mars.margin_warmup_epochs
        if args.max_steps > 0 and (mars.margin_sampling or augmenting) and plan.num_epochs <= warmup:
            first = warmup * updates_for(plan.samples(0))
            logger.warning(
                f"max_steps={args.max_steps} ends before MARS starts: the warm-up (margin_warmup_epochs={warmup}) "
                f"lasts {first} optimizer steps, and the first margin refresh would come after step {first}. This run "
                "trains like RewardTrainer: raise `max_steps` above that or lower `margin_warmup_epochs`."
            )
        if augmenting:
            self._mars_refiner.check_budgets(plan.round_budgets)
        self._mars_callback.plan = plan
        if mars.epoch_length == "fixed":
            return values
        self._mars_batches = [batches_for(n) for n in plan.epoch_samples]
        self._mars_updates = [updates_from(b) for b in self._mars_batches]
        sampler.set_length(plan.samples(0))
        if args.max_steps <= 0:
            # A fractional `num_train_epochs` cuts the last epoch, as Trainer does: ceil(fraction x its steps).
            fraction = args.num_train_epochs - (plan.num_epochs - 1)
            max_steps = sum(self._mars_updates[:-1]) + math.ceil(fraction * self._mars_updates[-1])
        num_samples = sum(plan.epoch_samples)
        return plan.num_epochs, self._mars_updates[0], num_examples, num_samples, total_batch_size, batches, max_steps

    def _run_epoch(self, *args, **kwargs):
        # Trainer runs every epoch with the first epoch's length; a pool epoch has its own, from the plan.
        if self._mars_active and self._mars_updates:
            epoch = min(kwargs["epoch"], len(self._mars_updates) - 1)
            kwargs["steps_in_epoch"] = self._mars_batches[epoch]
            kwargs["num_update_steps_per_epoch"] = self._mars_updates[epoch]
        return super()._run_epoch(*args, **kwargs)

    def _init_training_state(
        self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
    ):
        epochs, steps = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if self._mars_active and self._mars_updates and self.state.global_step > 0:
            # Where a resumed step lies in epochs of unequal length.
            done = np.cumsum(self._mars_updates)
            epochs = int(np.searchsorted(done, self.state.global_step, side="right"))
            within = self.state.global_step - (int(done[epochs - 1]) if epochs else 0)
            steps = 0 if self.args.ignore_data_skip else within * self.args.gradient_accumulation_steps
        return epochs, steps

    @property
    def refiner(self) -> Refiner | None:
        """The augmentation rounds' [`Refiner`] (None without an augmenter, or with `use_mars=False`)."""
        return self._mars_refiner

    @property
    def mars_callback(self) -> MarsCallback | None:
        """The [`MarsCallback`] that drives margins, rounds and sampler (None with `use_mars=False`)."""
        return self._mars_callback

    @property
    def resume_checkpoint(self) -> str | None:
        """The checkpoint folder `train()` resumes from (None for a fresh run)."""
        return self._mars_resume_dir

    @property
    def margin_sampler(self) -> MarginAwareSampler | None:
        """The sampler in use (None before `train()` or when MARS is off)."""
        return self._mars_sampler

    @property
    def margins(self) -> np.ndarray | None:
        """Current margin estimate of every training pair (None when MARS is off)."""
        if self._mars_callback is None or self._mars_callback.table is None:
            return None
        return self._mars_callback.table.values.copy()

    # -- loss -----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pair_index = inputs.pop(INDEX_COLUMN, None)
        online = (
            pair_index is not None
            and self.model.training
            and self.mars_args.margin_sampling
            and self.mars_args.margin_source == "online"
        )
        if not online:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            chosen, rejected = torch.chunk(outputs.logits.detach().squeeze(-1).double(), chunks=2)
            indices, margins = gather_indexed(self.accelerator, pair_index.cpu().numpy(), (chosen - rejected).cpu().numpy())
        self._mars_callback.record_online(indices, margins)
        return (loss, outputs) if return_outputs else loss

    def scoring_model(self) -> torch.nn.Module:
        """The module to run the scoring forward passes on: sharded engines need their wrapper, others do not."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return self.model_wrapped
        return self.model

    def scoring_arguments(self) -> dict:
        """What every margin-scoring pass of this run shares: model, padding, batch size, processes, precision."""
        return dict(
            model=self.scoring_model(),
            pad_token_id=self.processing_class.pad_token_id,
            batch_size=self.mars_args.margin_scoring_batch_size or self.args.per_device_eval_batch_size,
            accelerator=self.accelerator,
            show_progress=not self.args.disable_tqdm,
            autocast_dtype=torch.bfloat16 if self.mars_args.margin_scoring_precision == "bf16" else None,
        )

    def log_mars(self, logs: dict[str, float]) -> None:
        # `RewardTrainer.log` would fold (and clear) the running training metrics into this entry; MARS figures are
        # logged on their own through `Trainer.log`, which feeds every reporting integration.
        Trainer.log(self, dict(logs))

    def log_mars_with_next_entry(self, logs: dict[str, float]) -> None:
        """Add `logs` to the next entry the trainer logs (loss or eval), instead of an entry of their own: figures
        known at train start must not become `log_history[0]`, where RewardTrainer's users find their first metrics."""
        self._mars_deferred_logs.update(logs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._mars_deferred_logs:
            logs = {**logs, **self._mars_deferred_logs}
            self._mars_deferred_logs = {}
        super().log(logs, start_time)

    def save_mars_report(self, output_dir: str | None = None, plots: bool = True) -> dict[str, str]:
        """
        Write `mars_report.json`, `mars_augmented_pairs.jsonl` (augmented pairs as text, with provenance), PNG plots
        (margins per refresh, budget against margin, accuracy by round; also sent to TensorBoard when it is a `report_to`
        integration) and `mars_report.md` linking them, to `output_dir` (default: `args.output_dir`).
        """
        from .refinement.report import save_report

        if not self._mars_active:
            raise ValueError("There is no MARS report: MARS is off (`use_mars=False` or a streaming dataset).")
        if not self.is_world_process_zero():
            return {}
        return save_report(self, output_dir or self.args.output_dir, plots=plots)

    # -- model card ---------------------------------------------------------------------------------------------
    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero() or not self._mars_active:
            return
        path = os.path.join(self.args.output_dir, "README.md")
        if os.path.isfile(path):
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(self.mars_card_section())

    def mars_card_section(self) -> str:
        """The model card's account of MARS: settings, and what the refinement rounds did in this run."""
        from .config import MarsArguments

        defaults = MarsArguments()
        lines = [
            "",
            "## Trained with MARS",
            "",
            "This reward model was trained with [mars-trl](https://arxiv.org/abs/2602.17658): margin-aware sampling of "
            "preference pairs (softmax(-tau * margin) over the current reward margins, mixed with a uniform floor) "
            "and self-refinement rounds that augment the hardest pairs.",
            "",
            "| setting | value |",
            "|---|---|",
        ]
        for name in MarsArguments.mars_field_names():
            value = getattr(self.mars_args, name)
            marker = "" if value == getattr(defaults, name) else " (changed)"
            lines.append(f"| `{name}` | `{value!r}`{marker} |")
        if self._mars_refiner is not None and self._mars_refiner.reports:
            reports = self._mars_refiner.reports
            lines += [
                "",
                f"Refinement: {len(reports)} rounds with the `{reports[-1]['augmenter']}` augmenter and the "
                f"`{reports[-1]['strategy']}` strategy grew the pool from {self._mars_pool.num_labelled} labelled "
                f"pairs to {len(self._mars_pool)}.",
            ]
        return "\n".join(lines) + "\n"

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        path = resume_from_checkpoint
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if path is True:
            path = last_complete_checkpoint(self.args.output_dir)
            if path is None:
                raise ValueError(
                    f"No complete checkpoint found in output_dir ({self.args.output_dir}) to resume from."
                )
        self._mars_resume_dir = path if isinstance(path, str) else None
        if self._mars_active:
            if self._mars_resume_dir is not None:
                self._check_mars_state(self._mars_resume_dir)
            self._reset_mars()
        return super().train(
            resume_from_checkpoint=path,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def _reset_mars(self) -> None:
        # Every `train()` call (a second one, each hyperparameter-search trial) starts MARS afresh, as it starts the
        # epoch count afresh; a resume then loads the checkpoint's MARS state over this.
        if self._mars_refiner is not None:
            self._mars_refiner.reset()
        self._mars_pool.reset()
        self._mars_callback.reset()
        self._mars_sampler = None
        self._mars_plan, self._mars_batches, self._mars_updates = None, [], []
        self._mars_deferred_logs = {}

    def _check_mars_state(self, checkpoint: str) -> None:
        if has_state(checkpoint) or not written_by_mars(checkpoint):
            return
        if not self.mars_args.resume_without_mars_state:
            raise MarsStateError(
                f"Checkpoint {checkpoint} was written by a MARS run, but its MARS state ({STATE_FILE} and the "
                "files it names: margins, sampler, augmented pool) is missing. Restore those files, resume from an "
                "earlier checkpoint, or set `resume_without_mars_state=True` to resume without them (the augmented "
                "pool is lost and margins are re-scored at the next refresh)."
            )
        logger.warning(
            f"Resuming from {checkpoint} without its MARS state (`resume_without_mars_state=True`): the augmented "
            "pool starts empty and margins are re-scored at the next refresh."
        )

    def _load_callback_state(self):
        # The MARS marker is not a callback: keep it out of `restore_callback_states_from_checkpoint`'s way.
        marker = self.state.stateful_callbacks.pop(MARS_STATE_MARKER, None)
        try:
            super()._load_callback_state()
        finally:
            if marker is not None:
                self.state.stateful_callbacks[MARS_STATE_MARKER] = marker

    def _save_checkpoint(self, model, trial):
        # Written before the weights: a checkpoint folder never has weights without the MARS state that goes with them.
        if self._mars_callback is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_run_state(folder, self._mars_callback)
            self.state.stateful_callbacks[MARS_STATE_MARKER] = {"mars_state": STATE_FILE}
        super()._save_checkpoint(model, trial)
