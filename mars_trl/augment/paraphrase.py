"""Model-based paraphrase augmentation, as in the MARS paper.

Following the MARS authors, the prompt, the chosen and the rejected response are each paraphrased into
`num_return_sequences` (5) texts with a seq2seq paraphraser (default `humarin/chatgpt_paraphraser_on_T5_base`, beam
search: 5 beams, 5 returns, no sampling, `no_repeat_ngram_size=3`), and the chosen and rejected paraphrases are
crossed into 5 x 5 = 25 variants. Variant (j, l) pairs chosen paraphrase j with rejected paraphrase l and uses
prompt paraphrase j. Variants are listed by diagonals ((0, 0), (1, 1), ..., (4, 4), (0, 1), (1, 2), ...) so the
first `k` use every paraphrase about equally often.

A paraphrase of a complete text keeps its meaning, so a better answer stays better. Two guards keep it that way
where a paraphraser would not: a text longer than `max_new_tokens` tokens is kept verbatim (its paraphrase would be
cut off, and a truncated chosen answer can be worse than the rejected one), and an empty generation falls back to
the original text.

Any chat (causal) model works too: it is asked, through its chat template, to paraphrase while keeping the meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.fields import layout_fields, pair_core, pair_key, pair_layout, primary_fields, with_texts
from ..lazy_model import LazyModel, model_device
from .base import Augmenter

DEFAULT_PARAPHRASER = "humarin/chatgpt_paraphraser_on_T5_base"
DEFAULT_CHAT_INSTRUCTION = (
    "Paraphrase the following text. Keep its meaning, facts, language, tone and level of detail, and fix nothing. "
    "Reply with the paraphrase only.\n\n{text}"
)


def _diagonal_order(n: int) -> list[tuple[int, int]]:
    return [(j, (j + d) % n) for d in range(n) for j in range(n)]


class ParaphraseAugmenter(Augmenter):
    r"""
    Paraphrase the prompt, chosen and rejected texts with a seq2seq paraphraser or a chat model, and cross the
    chosen and rejected paraphrases into `num_return_sequences ** 2` variants per pair (25 by default).

    Variant (j, l) uses prompt paraphrase j, chosen paraphrase j and rejected paraphrase l. For conversational rows
    only the last user message of the prompt (explicit prompt) or of the conversation before the final assistant
    turn (implicit prompt), and the final assistant message(s) of chosen and rejected, are paraphrased; system
    messages, earlier turns and roles stay as they are. Identical texts across the batch are paraphrased once.

    Args:
        model: a model id or local path (loaded with `AutoModelForSeq2SeqLM` when its config is encoder-decoder, else
            `AutoModelForCausalLM`), or an instantiated `PreTrainedModel` (then `tokenizer` is required). Loading is
            deferred to first use.
        tokenizer: a tokenizer, or an id/path to load one from; defaults to `model`'s when `model` is an id/path.
        prefix: put before each text for a seq2seq paraphraser (`"paraphrase: "` for the default T5 model).
        num_beams: beams per text (5, as the authors).
        num_return_sequences: paraphrases per text (5); a pair yields this many squared variants.
        no_repeat_ngram_size: forbids repeated n-grams in a paraphrase (3).
        do_sample: sample instead of beam search (off, as the authors).
        max_new_tokens: longest paraphrase. Texts longer than this many tokens are kept verbatim (their paraphrase
            would be truncated, and a truncated chosen answer could become the worse one).
        batch_size: texts per `generate` call.
        device: where to run; the model is moved there. Defaults to the model's own device.
        torch_dtype: dtype used when loading `model` from an id/path.
        show_progress: show a tqdm progress bar over the texts.
        chat_instruction: the request sent to a causal model; `{text}` is replaced by the text (appended when the
            instruction has no `{text}`).
        paraphrase_prompt: also paraphrase the prompt; with `False` the prompt is kept.
        generation_kwargs: extra keyword arguments for `model.generate` (e.g. `repetition_penalty`).

    Example:

    ```python
    >>> from mars_trl.augment import ParaphraseAugmenter
    >>> augmenter = ParaphraseAugmenter()  # humarin/chatgpt_paraphraser_on_T5_base, loaded on first use
    >>> augmenter.variants_per_pair
    25
    >>> pair = {"prompt": "How do I boil an egg?", "chosen": "Simmer it for 8 minutes.", "rejected": "Microwave it."}
    >>> variants = augmenter([pair], k=4)[0]  # doctest: +SKIP
    >>> variants[0]  # doctest: +SKIP
    {'prompt': 'What is the way to boil an egg?', 'chosen': 'Let it simmer for eight minutes.', ...}
    ```
    """

    name = "paraphrase"

    def __init__(
        self,
        model: Any = DEFAULT_PARAPHRASER,
        tokenizer: Any = None,
        prefix: str = "paraphrase: ",
        num_beams: int = 5,
        num_return_sequences: int = 5,
        no_repeat_ngram_size: int = 3,
        do_sample: bool = False,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        device: Any = None,
        torch_dtype: Any = None,
        show_progress: bool = True,
        chat_instruction: str = DEFAULT_CHAT_INSTRUCTION,
        paraphrase_prompt: bool = True,
        generation_kwargs: dict | None = None,
    ):
        if num_return_sequences < 1 or batch_size < 1 or max_new_tokens < 1:
            raise ValueError("num_return_sequences, batch_size and max_new_tokens must be >= 1")
        if not do_sample and num_return_sequences > num_beams:
            raise ValueError(
                f"beam search returns at most num_beams sequences: num_return_sequences={num_return_sequences} > "
                f"num_beams={num_beams} (raise num_beams or set do_sample=True)"
            )
        self._lm = LazyModel(model, tokenizer, device=device, torch_dtype=torch_dtype)
        self.prefix = prefix
        self.num_beams = num_beams
        self.num_return_sequences = num_return_sequences
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.do_sample = do_sample
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.chat_instruction = chat_instruction
        self.paraphrase_prompt = paraphrase_prompt
        self.generation_kwargs = dict(generation_kwargs or {})
        self.variants_per_pair = num_return_sequences**2
        #: Variants never pair a reworded response with a verbatim one (set by the filtered LM paraphraser, whose
        #: rejected paraphrases fall back to the source text).
        self.symmetric_responses = False

    def __repr__(self) -> str:
        return (
            f"ParaphraseAugmenter(model={self._lm.name!r}, num_return_sequences={self.num_return_sequences}, "
            f"variants_per_pair={self.variants_per_pair})"
        )

    # -- model ---------------------------------------------------------------------------------------------------

    @property
    def model(self):
        """The paraphrasing model (loaded on first access when given as an id/path)."""
        return self._lm.model

    @property
    def tokenizer(self):
        """The model's tokenizer (loaded on first access when given as an id/path)."""
        return self._lm.tokenizer

    @property
    def is_encoder_decoder(self) -> bool:
        """Whether the model is a seq2seq paraphraser (else a causal chat model, prompted with an instruction)."""
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    # -- paraphrasing --------------------------------------------------------------------------------------------

    def paraphrase(self, texts: Sequence[str]) -> dict[str, list[str]]:
        """
        Paraphrase each distinct text into `num_return_sequences` texts, in one batched pass.

        Returns a dict from text to its paraphrases. Blank texts, texts longer than `max_new_tokens` tokens and empty
        generations keep the original text in their slot; a paraphrase keeps the original's leading and trailing
        whitespace.

        >>> from mars_trl.augment import ParaphraseAugmenter
        >>> ParaphraseAugmenter().paraphrase(["How are you?"])  # doctest: +SKIP
        {'How are you?': ['How are you doing?', "How's it going?", ...]}
        """
        import torch
        from tqdm.auto import tqdm

        n = self.num_return_sequences
        unique = list(dict.fromkeys(texts))
        out = {text: [text] * n for text in unique}
        todo = [text for text in unique if text.strip()]
        if not todo:
            return out
        model, tokenizer = self.model, self.tokenizer
        lengths = tokenizer(todo, add_special_tokens=False)["input_ids"]
        todo = [text for text, ids in zip(todo, lengths) if len(ids) <= self.max_new_tokens]
        # Longest first: similar lengths share a batch (less padding) and an out-of-memory shows up at once.
        todo.sort(key=len, reverse=True)
        if not todo:
            return out

        encoder_decoder = self.is_encoder_decoder
        was_training = model.training
        padding_side, missing_pad = tokenizer.padding_side, tokenizer.pad_token is None
        if missing_pad:
            tokenizer.pad_token = tokenizer.eos_token
        if not encoder_decoder:
            tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        gen_kwargs = {
            "num_beams": self.num_beams,
            "num_return_sequences": n,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            **self.generation_kwargs,
        }
        device = model_device(model)
        model.eval()
        try:
            with (
                torch.no_grad(),
                tqdm(total=len(todo), desc="paraphrasing", unit="text", disable=not self.show_progress) as progress,
            ):
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start : start + self.batch_size]
                    inputs = self._encode([text.strip() for text in batch], encoder_decoder).to(device)
                    sequences = model.generate(**inputs, **gen_kwargs)
                    if not encoder_decoder:
                        sequences = sequences[:, inputs["input_ids"].shape[1] :]  # only the new tokens
                    decoded = tokenizer.batch_decode(sequences, skip_special_tokens=True)
                    for i, text in enumerate(batch):
                        # Keep the original's outer whitespace: "Assistant:" + " answer" must not become glued.
                        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
                        generated = [g.strip() for g in decoded[i * n : (i + 1) * n]]
                        out[text] = [lead + g + trail if g else text for g in generated]
                    progress.update(len(batch))
        finally:
            model.train(was_training)
            tokenizer.padding_side = padding_side
            if missing_pad:
                tokenizer.pad_token = None
        return out

    def _encode(self, batch: list[str], encoder_decoder: bool):
        tokenizer = self.tokenizer
        if encoder_decoder:
            return tokenizer(
                [self.prefix + text for text in batch], padding=True, truncation=True, return_tensors="pt"
            )
        prompts = []
        for text in batch:
            request = (
                self.chat_instruction.replace("{text}", text)
                if "{text}" in self.chat_instruction
                else f"{self.chat_instruction}\n\n{text}"
            )
            if getattr(tokenizer, "chat_template", None):
                prompts.append(
                    tokenizer.apply_chat_template(
                        [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
                    )
                )
            else:
                prompts.append(f"{request}\n\n")
        # A chat template already holds the special tokens it needs.
        add_special = not getattr(tokenizer, "chat_template", None)
        return tokenizer(prompts, padding=True, add_special_tokens=add_special, return_tensors="pt")

    # -- augmenting ----------------------------------------------------------------------------------------------

    def augment(self, pairs: list[dict], k: int) -> list[list[dict]]:
        k = min(int(k), self.variants_per_pair)
        if k <= 0 or not pairs:
            return [[] for _ in pairs]
        plans = []
        texts: list[str] = []
        for pair in pairs:
            fields = {path: text for path, text, _ in layout_fields(pair, pair_layout(pair))}
            primaries = primary_fields(pair)
            plan = {
                "prompt": [p for p in primaries if p[0] == "prompt"] if self.paraphrase_prompt else [],
                "chosen": [p for p in primaries if p[0] == "chosen"],
                "rejected": [p for p in primaries if p[0] == "rejected"],
            }
            plans.append((fields, plan))
            texts += [fields[path] for paths in plan.values() for path in paths]
        paraphrases = self.paraphrase(texts)

        out = []
        for pair, (fields, plan) in zip(pairs, plans):
            variants = []
            out.append(variants)
            if not all(any(fields[path].strip() for path in plan[side]) for side in ("chosen", "rejected")):
                continue  # an empty response stays empty: no usable variant
            seen = {pair_key(pair_core(pair))}
            for j, m in _diagonal_order(self.num_return_sequences):
                new_texts = {path: paraphrases[fields[path]][j] for path in plan["prompt"] + plan["chosen"]}
                new_texts.update({path: paraphrases[fields[path]][m] for path in plan["rejected"]})
                if self.symmetric_responses:
                    # Never one response reworded and the other verbatim: which side is reworded must not hint at
                    # the label (a filter that keeps fewer rejected-side paraphrases would make that side verbatim).
                    changed = [
                        any(new_texts[path] != fields[path] for path in plan[side]) for side in ("chosen", "rejected")
                    ]
                    if changed[0] != changed[1]:
                        new_texts.update({path: fields[path] for path in plan["chosen"] + plan["rejected"]})
                variant = with_texts(pair, new_texts)
                signature = pair_key(variant)
                if signature in seen or variant["chosen"] == variant["rejected"]:
                    continue
                seen.add(signature)
                variants.append(variant)
                if len(variants) >= k:
                    break
        return out
