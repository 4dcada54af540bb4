"""Wiring into the trainer: the sharpener the `semantic_*` settings describe, attached to the augmentation rounds."""

from __future__ import annotations

from typing import Any

from .embedder import Embedder
from .rewriters import OpenAIRewriter, TransformersRewriter
from .sharpener import SemanticSharpener


def sharpener_from_config(mars, accelerator: Any = None, seed: int = 0, show_progress: bool = True):
    """The [`SemanticSharpener`] described by the `semantic_*` settings of a [`MarsArguments`]."""
    device = getattr(accelerator, "device", None)
    rank = getattr(accelerator, "process_index", 0) if accelerator is not None else 0
    embedder = Embedder(
        mars.semantic_embedder,
        device=str(device) if device is not None else None,
        batch_size=mars.semantic_embed_batch_size,
        show_progress=show_progress,
    )
    rewriter = None
    if mars.semantic_rewriter == "transformers":
        rewriter = TransformersRewriter(
            mars.semantic_rewriter_model,
            gguf_file=mars.semantic_rewriter_gguf_file,
            max_new_tokens=mars.semantic_max_new_tokens,
            batch_size=mars.semantic_batch_size,
            device=device,
            seed=seed + rank,
            show_progress=show_progress,
        )
    elif mars.semantic_rewriter == "openai":
        rewriter = OpenAIRewriter(
            mars.semantic_rewriter_model,
            base_url=mars.semantic_base_url,
            api_key_env=mars.semantic_api_key_env,
            timeout=mars.semantic_timeout,
            max_retries=mars.semantic_max_retries,
            max_tokens=mars.semantic_max_new_tokens,
            concurrency=mars.semantic_batch_size,
        )
    return SemanticSharpener(
        embedder,
        rewriter,
        threshold=mars.semantic_threshold,
        max_attempts=mars.semantic_max_attempts,
        show_progress=show_progress,
    )


def attach_sharpener(refiner, sharpener: Any = None):
    """
    Plug the semantic layer into a trainer's refiner: `sharpener` (any object with `sharpen(pairs)`), else the one the
    trainer's `semantic_*` settings describe; then call its `fit` once with every labelled pair.
    """
    trainer = refiner.trainer
    show = not trainer.args.disable_tqdm and trainer.accelerator.is_local_main_process
    if sharpener is None:
        sharpener = sharpener_from_config(
            refiner.mars, trainer.accelerator, seed=trainer.args.seed, show_progress=show
        )
    if not callable(getattr(sharpener, "sharpen", None)):
        raise TypeError(
            "sharpener must have a method sharpen(pairs) -> (pairs, counts), e.g. mars_trl.semantic.sharpener.SemanticSharpener; "
            f"got {type(sharpener).__name__}"
        )
    refiner.sharpener = sharpener
    fit = getattr(sharpener, "fit", None)
    if callable(fit):
        pairs = [refiner.raw_pair(i) for i in range(refiner.pool.num_labelled)]
        if isinstance(sharpener, SemanticSharpener):
            fit(pairs, accelerator=trainer.accelerator)
        else:
            fit(pairs)
    return sharpener
