"""Tests for `mars_trl.augment`: real tiny models (T5 and Llama built from configs), tokenizers trained on the fly."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from mars_trl.augment import (
    Augmenter,
    CallableAugmenter,
    ParaphraseAugmenter,
    PerturbationAugmenter,
    as_augmenter,
    validate_variants,
)
from mars_trl.augment.perturbation import (
    contract_contractions,
    expand_contractions,
    normalize_typography,
    normalize_whitespace,
    swap_bullets,
)
from mars_trl.data.fields import pair_core, primary_fields, text_fields, with_texts

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our team", "the model", "a bird", "the river"]
_VERBS = ["likes", "sees", "helps", "answers", "writes", "reads", "finds", "builds"]
_OBJECTS = ["the ball", "a letter", "the code", "a song", "the answer", "a book", "the plan", "a house"]
_GOOD = ["correct", "helpful", "clear", "kind", "accurate", "polite"]
_BAD = ["wrong", "rude", "vague", "unsafe", "false", "sloppy"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"


def base_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        base = _sentence(rng)
        rows.append(
            {
                "prompt": f"What {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}?",
                "chosen": f"{base} and it is {rng.choice(_GOOD)}.",
                "rejected": f"{base} and it is {rng.choice(_BAD)}.",
                "id": i,
            }
        )
    return rows


def to_format(row: dict, conversational: bool, explicit: bool) -> dict:
    """One of TRL's four formats; conversational rows carry a system message that must never change."""
    if not conversational:
        if explicit:
            return dict(row)
        return {
            "chosen": f"{row['prompt']} {row['chosen']}",
            "rejected": f"{row['prompt']} {row['rejected']}",
            "id": row.get("id"),
        }
    prompt = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": row["prompt"]}]
    chosen = [{"role": "assistant", "content": row["chosen"]}]
    rejected = [{"role": "assistant", "content": row["rejected"]}]
    if explicit:
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "id": row.get("id")}
    return {"chosen": prompt + chosen, "rejected": prompt + rejected, "id": row.get("id")}


FORMATS = [(False, True), (False, False), (True, True), (True, False)]
FORMAT_IDS = ["standard-explicit", "standard-implicit", "conversational-explicit", "conversational-implicit"]


def assert_same_structure(pair: dict, variant: dict) -> None:
    """Keys, types, message counts, roles and non-content keys match; only contents of primary fields changed."""
    assert set(variant) == {key for key in ("prompt", "chosen", "rejected") if key in pair}
    for key, value in variant.items():
        original = pair[key]
        assert type(value) is type(original)
        if isinstance(original, list):
            assert len(value) == len(original)
            for old, new in zip(original, value):
                assert new["role"] == old["role"]
                assert set(new) == set(old)
                assert isinstance(new["content"], str)
                if old["role"] == "system":
                    assert new["content"] == old["content"]
    if isinstance(pair["chosen"], list) and "prompt" not in pair:
        # An implicit prompt stays shared by both sides.
        assert variant["chosen"][:-1] == variant["rejected"][:-1]
    changed = {path for (path, old), (_, new) in zip(text_fields(pair), text_fields(variant)) if old != new}
    assert changed <= set(primary_fields(pair))


# --------------------------------------------------------------------------------------------------------------------
# Tiny models


def _corpus() -> list[str]:
    rng = random.Random(123)
    words = set(" ".join(_SUBJECTS + _VERBS + _OBJECTS + _GOOD + _BAD).split())
    words |= {"what", "?", "and", "it", "is", "paraphrase:", "you", "are", "terse.", "."}
    return [" ".join(sorted(words))] + [f"{_sentence(rng)} and it is {rng.choice(_GOOD + _BAD)}" for _ in range(300)]


def _word_level(special: list[str]) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(_corpus(), trainer=trainers.WordLevelTrainer(special_tokens=special, min_frequency=1))
    return tok


@pytest.fixture(scope="session")
def t5_tokenizer():
    tok = _word_level(["<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def t5_model(t5_tokenizer):
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(t5_tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory, t5_model, t5_tokenizer):
    path = tmp_path_factory.mktemp("tiny-t5")
    t5_model.save_pretrained(path)
    t5_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def chat_tokenizer():
    tok = _word_level(["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


@pytest.fixture(scope="session")
def chat_model(chat_tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(chat_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=chat_tokenizer.pad_token_id,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM(config).eval()


class GenerateSpy:
    """Wraps `model.generate` on the instance: records inputs, outputs, grad mode and train mode of each call."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self._generate = model.generate
        self._hook = model.register_forward_hook(self._record_forward)
        self.forward = []
        model.generate = self

    def _record_forward(self, module, args, output):
        self.forward.append((torch.is_grad_enabled(), module.training))

    def __call__(self, **kwargs):
        out = self._generate(**kwargs)
        self.calls.append(
            {
                "input_ids": kwargs["input_ids"],
                "attention_mask": kwargs["attention_mask"],
                "out": out,
                "kwargs": kwargs,
            }
        )
        return out

    def close(self):
        del self.model.generate
        self._hook.remove()

    @property
    def n_inputs(self) -> int:
        return sum(call["input_ids"].shape[0] for call in self.calls)


def paraphraser(model, tokenizer, **kwargs) -> ParaphraseAugmenter:
    kwargs = {"max_new_tokens": 12, "show_progress": False, **kwargs}
    return ParaphraseAugmenter(model, tokenizer=tokenizer, **kwargs)


def expected_variants(augmenter: ParaphraseAugmenter, pair: dict, k: int) -> list[dict]:
    """Oracle for the crossing rule: variant (j, l) = prompt para j, chosen para j, rejected para l."""
    fields = dict(text_fields(pair))
    primaries = primary_fields(pair)
    para = augmenter.paraphrase([fields[p] for p in primaries])
    n = augmenter.num_return_sequences
    out, seen = [], [pair_core(pair)]
    for j in range(n):
        for m in range(n):
            new = {p: para[fields[p]][m if p[0] == "rejected" else j] for p in primaries}
            variant = with_texts(pair, new)
            if variant not in seen and variant["chosen"] != variant["rejected"]:
                seen.append(variant)
                out.append(variant)
    return out[:k]


# --------------------------------------------------------------------------------------------------------------------
# ParaphraseAugmenter


@pytest.mark.parametrize("conversational,explicit", FORMATS, ids=FORMAT_IDS)
def test_paraphrase_t5_formats(t5_model, t5_tokenizer, conversational, explicit):
    augmenter = paraphraser(t5_model, t5_tokenizer)
    assert augmenter.variants_per_pair == 25
    pairs = [to_format(row, conversational, explicit) for row in base_rows(4)]
    out = augmenter(pairs, k=25)
    assert len(out) == len(pairs)
    for pair, variants in zip(pairs, out):
        assert 0 < len(variants) <= 25
        for variant in variants:
            assert_same_structure(pair, variant)
        ok, problems = validate_variants(pair, variants, k=25)
        assert problems == [] and ok == variants
        # Same set as the crossing rule gives (the order is by diagonals, not row-major).
        oracle = expected_variants(augmenter, pair, k=25)
        assert sorted(map(json.dumps, variants)) == sorted(map(json.dumps, oracle))


def test_paraphrase_crossing_rule_and_order(t5_model, t5_tokenizer):
    augmenter = paraphraser(t5_model, t5_tokenizer)
    # A random tiny T5 often paraphrases similar texts alike; pick three texts whose 5 paraphrases are all distinct
    # (within and across texts), so every one of the 25 crossings is a distinct, valid variant.
    rng = random.Random(5)
    pool = list(
        dict.fromkeys(_sentence(rng) + (f" and it is {rng.choice(_GOOD)}" if i % 2 else "") for i in range(30))
    )
    para = augmenter.paraphrase(pool)
    picked: list[str] = []
    for text in pool:
        if (
            len(set(para[text])) == 5
            and text not in para[text]
            and all(not set(para[text]) & set(para[p]) for p in picked)
        ):
            picked.append(text)
    assert len(picked) >= 3, "the tiny T5 should give distinct paraphrases for some texts"
    pair = {"prompt": picked[0], "chosen": picked[1], "rejected": picked[2]}
    variants = augmenter([pair], k=100)[0]
    assert len(variants) == 25  # the full 5 x 5 pool, capped at variants_per_pair
    # Diagonal order: the first 5 variants use paraphrase j of the prompt and chosen and j of the rejected.
    for j, variant in enumerate(variants[:5]):
        assert variant == {
            "prompt": para[pair["prompt"]][j],
            "chosen": para[pair["chosen"]][j],
            "rejected": para[pair["rejected"]][j],
        }
    assert variants[5]["rejected"] == para[pair["rejected"]][1] and variants[5]["chosen"] == para[pair["chosen"]][0]
    # Every (j, l) combination shows up once, always with prompt paraphrase j.
    combos = {(para[pair["chosen"]].index(v["chosen"]), para[pair["rejected"]].index(v["rejected"])) for v in variants}
    assert len(combos) == 25
    assert all(v["prompt"] == para[pair["prompt"]][para[pair["chosen"]].index(v["chosen"])] for v in variants)
    assert augmenter([pair], k=3)[0] == variants[:3]


def test_paraphrase_dedupes_texts_eval_and_no_grad(t5_model, t5_tokenizer):
    augmenter = paraphraser(t5_model, t5_tokenizer, batch_size=3)
    rows = base_rows(6)
    # Shared chosen texts and a shared prompt, as in real data.
    for row in rows[3:]:
        row["chosen"] = rows[0]["chosen"]
        row["prompt"] = rows[1]["prompt"]
    unique = {text for row in rows for text in (row["prompt"], row["chosen"], row["rejected"])}
    t5_model.train()
    spy = GenerateSpy(t5_model)
    try:
        augmenter(rows, k=4)
    finally:
        spy.close()
    assert spy.n_inputs == len(unique) < 3 * len(rows)
    assert all(call["input_ids"].shape[0] <= 3 for call in spy.calls)
    assert spy.forward and all(grad is False and training is False for grad, training in spy.forward)
    assert t5_model.training is True  # the caller's mode is restored
    t5_model.eval()
    assert all(call["kwargs"]["num_beams"] == 5 and call["kwargs"]["num_return_sequences"] == 5 for call in spy.calls)
    assert all(
        call["kwargs"]["no_repeat_ngram_size"] == 3 and call["kwargs"]["do_sample"] is False for call in spy.calls
    )


def test_paraphrase_fallbacks(t5_model, t5_tokenizer):
    augmenter = paraphraser(t5_model, t5_tokenizer, max_new_tokens=6)
    long_text = " ".join(["the cat sees the ball"] * 3)  # 15 tokens > max_new_tokens: kept verbatim
    spy = GenerateSpy(t5_model)
    try:
        para = augmenter.paraphrase([long_text, "  ", "", "a dog reads a book"])
    finally:
        spy.close()
    assert para[long_text] == [long_text] * 5 and para["  "] == ["  "] * 5 and para[""] == [""] * 5
    assert spy.n_inputs == 1
    assert all(text.strip() for text in para["a dog reads a book"])
    # Outer whitespace is kept ("Assistant:" + " answer" stays two words), the model sees the stripped text.
    padded = augmenter.paraphrase(["  a dog reads a book\n"])["  a dog reads a book\n"]
    assert [p.strip() for p in padded] == para["a dog reads a book"]
    assert all(p.startswith("  ") and p.endswith("\n") for p in padded)
    # An empty response yields no variant; an empty generation falls back to the original text.
    assert augmenter([{"prompt": "what?", "chosen": " ", "rejected": "no"}], k=5) == [[]]
    assert augmenter([], k=5) == [] and augmenter(base_rows(2), k=0) == [[], []]


def test_paraphrase_empty_generation_falls_back(t5_model, t5_tokenizer):
    augmenter = paraphraser(t5_model, t5_tokenizer, generation_kwargs={"max_new_tokens": 1, "min_new_tokens": 0})
    original = t5_model.generate

    def generate_eos_only(**kwargs):
        out = original(**kwargs)
        out[:, 1:] = t5_tokenizer.pad_token_id  # every generation decodes to ""
        return out

    t5_model.generate = generate_eos_only
    try:
        para = augmenter.paraphrase(["a dog reads a book"])
        variants = augmenter([base_rows(1)[0]], k=25)[0]
    finally:
        del t5_model.generate
    assert para == {"a dog reads a book": ["a dog reads a book"] * 5}
    assert variants == []  # every slot fell back: nothing differs from the original


def test_paraphrase_prompt_off(t5_model, t5_tokenizer):
    augmenter = paraphraser(t5_model, t5_tokenizer, paraphrase_prompt=False)
    pair = to_format(base_rows(1)[0], conversational=True, explicit=True)
    variants = augmenter([pair], k=25)[0]
    assert variants and all(v["prompt"] == pair["prompt"] for v in variants)


def test_paraphrase_from_path_matches_instance(t5_dir, t5_model, t5_tokenizer):
    from_path = ParaphraseAugmenter(
        t5_dir, max_new_tokens=12, show_progress=False, device="cpu", torch_dtype=torch.float32
    )
    assert not from_path._lm.loaded  # loaded on first use
    rows = base_rows(3)
    out = from_path(rows, k=6)
    assert type(from_path.model).__name__ == "T5ForConditionalGeneration"
    assert from_path.is_encoder_decoder
    assert out == paraphraser(t5_model, t5_tokenizer)(rows, k=6)


@pytest.mark.parametrize("with_template", [True, False], ids=["chat-template", "plain-text"])
def test_paraphrase_causal_model(chat_model, chat_tokenizer, with_template):
    tokenizer = chat_tokenizer if with_template else copy.deepcopy(chat_tokenizer)
    if not with_template:
        tokenizer.chat_template = None
    augmenter = paraphraser(chat_model, tokenizer)
    assert not augmenter.is_encoder_decoder
    rows = base_rows(3)
    rows[1]["prompt"] = "what?"  # different lengths in one batch: left padding is needed
    spy = GenerateSpy(chat_model)
    try:
        out = augmenter(rows, k=25)
    finally:
        spy.close()
    assert tokenizer.padding_side == "right"  # restored
    for call in spy.calls:
        assert call["attention_mask"][:, -1].all()  # left-padded: every row ends with a real token
        assert call["attention_mask"].min() == 0
        prompt = tokenizer.decode(call["input_ids"][0], skip_special_tokens=False)
        assert ("<|assistant|>" in prompt) == with_template
    # Only the new tokens are decoded.
    call = spy.calls[0]
    n_in = call["input_ids"].shape[1]
    first_new = tokenizer.decode(call["out"][0, n_in:], skip_special_tokens=True).strip()
    assert first_new in {
        p for ps in augmenter.paraphrase([t for r in rows for t in (r["prompt"], r["chosen"])]).values() for p in ps
    }
    for pair, variants in zip(rows, out):
        assert 0 < len(variants) <= 25
        assert validate_variants(pair, variants, k=25)[1] == []


def test_paraphrase_causal_conversational(chat_model, chat_tokenizer):
    augmenter = paraphraser(chat_model, chat_tokenizer)
    for conversational, explicit in FORMATS[2:]:
        pairs = [to_format(row, conversational, explicit) for row in base_rows(2)]
        for pair, variants in zip(pairs, augmenter(pairs, k=10)):
            assert 0 < len(variants) <= 10
            for variant in variants:
                assert_same_structure(pair, variant)


def test_paraphrase_argument_errors(t5_model, t5_tokenizer):
    with pytest.raises(ValueError, match="tokenizer"):
        ParaphraseAugmenter(t5_model)
    with pytest.raises(ValueError, match="num_beams"):
        ParaphraseAugmenter(t5_model, tokenizer=t5_tokenizer, num_beams=2, num_return_sequences=3)
    with pytest.raises(TypeError, match="model id/path or an instantiated PreTrainedModel"):
        ParaphraseAugmenter(42)
    assert (
        ParaphraseAugmenter(t5_model, tokenizer=t5_tokenizer, num_beams=3, num_return_sequences=3).variants_per_pair
        == 9
    )


# --------------------------------------------------------------------------------------------------------------------
# PerturbationAugmenter

_WORDS = [
    "I'm",
    "you're",
    "don't",
    "can't",
    "it's",
    "do",
    "not",
    "is",
    "you",
    "are",
    "I",
    "am",
    "will",
    "sure",
    "the",
    "answer",
    "“quoted”",
    "—",
    "…",
    "code",
    "`don't`",
    "works",
    "today.",
    "Yes,",
    "well",
    " ",
    "\n\n\n",
    "\n- item",
    "\n* item",
    "won't",
    "we'll",
    "cannot",
]


def text_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(m: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(m)).strip() or "ok"

    return [
        {"prompt": f"What {text(4)}?", "chosen": text(12) + " right.", "rejected": text(9) + " wrong.", "id": i}
        for i in range(n)
    ]


def test_perturbation_deterministic_and_seeded():
    rows = text_rows(20)
    a, b = PerturbationAugmenter(seed=0), PerturbationAugmenter(seed=0)
    out = a(rows, k=10)
    assert out == b(copy.deepcopy(rows), k=10)
    assert out != PerturbationAugmenter(seed=1)(rows, k=10)
    # k only truncates: a smaller k gives a prefix of a larger one.
    assert a(rows, k=3) == [variants[:3] for variants in out]
    assert rows == text_rows(20)  # inputs are not modified


def test_perturbation_independent_of_batch():
    rows = text_rows(12, seed=1)
    augmenter = PerturbationAugmenter(seed=7)
    alone = [augmenter([row], k=8)[0] for row in rows]
    assert augmenter(rows, k=8) == alone
    assert augmenter(list(reversed(rows)), k=8) == list(reversed(alone))
    # Metadata does not enter the RNG: the variants depend on the texts alone.
    assert augmenter([{**rows[0], "id": 999, "margin": 0.5}], k=8)[0] == alone[0]


def test_perturbation_independent_of_hash_seed():
    """Two interpreters with different PYTHONHASHSEED produce byte-identical variants."""
    rows = text_rows(5, seed=2)
    # Load the augment subpackage without the trainer stack (faster; it needs nothing from it).
    script = (
        "import json, sys, types\n"
        f"pkg = types.ModuleType('mars_trl'); pkg.__path__ = [{os.path.join(ROOT, 'mars_trl')!r}]\n"
        "sys.modules['mars_trl'] = pkg\n"
        "from mars_trl.augment import PerturbationAugmenter\n"
        "rows = json.loads(sys.stdin.read())\n"
        "print(json.dumps(PerturbationAugmenter(seed=3)(rows, k=6)))\n"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(rows),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == PerturbationAugmenter(seed=3)(rows, k=6)


@pytest.mark.parametrize("conversational,explicit", FORMATS, ids=FORMAT_IDS)
def test_perturbation_formats(conversational, explicit):
    rows = [to_format(row, conversational, explicit) for row in text_rows(15, seed=3) + base_rows(5)]
    augmenter = PerturbationAugmenter(seed=0)
    for pair, variants in zip(rows, augmenter(rows, k=25)):
        assert 0 < len(variants) <= 25
        signatures = [json.dumps(v, sort_keys=True) for v in variants]
        assert len(set(signatures)) == len(variants)  # distinct
        original = pair_core(pair)
        for variant in variants:
            assert variant != original
            assert variant["chosen"] != variant["rejected"]
            assert_same_structure(pair, variant)
        ok, problems = validate_variants(pair, variants, k=25)
        assert problems == [] and ok == variants


def test_perturbation_fewer_variants_not_duplicates():
    augmenter = PerturbationAugmenter(seed=0, prompt_lead_ins=(), response_lead_ins=())
    # Nothing to edit but the first letter's case and the final stop: at most 3 combinations.
    pair = {"prompt": "Hello there.", "chosen": "ok", "rejected": "no"}
    variants = augmenter([pair], k=25)[0]
    assert sorted(v["prompt"] for v in variants) == sorted(["hello there.", "Hello there", "hello there"])
    assert augmenter([{"chosen": "a", "rejected": "b"}], k=25) == [[]]  # nothing at all to edit
    # An edit that would merge chosen and rejected is skipped.
    merged = augmenter([{"prompt": "x", "chosen": "I do not know", "rejected": "I don't know"}], k=25)[0]
    assert all(v["chosen"] != v["rejected"] for v in merged)
    assert PerturbationAugmenter(variants_per_pair=4)(text_rows(3), k=25) == [
        v[:4] for v in PerturbationAugmenter()(text_rows(3), k=4)
    ]


_SYMMETRIC_WORDS = [w for w in _WORDS if w not in ("you", "I", "we", "they")] + ["dog", "ran"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    head=st.lists(st.sampled_from(_SYMMETRIC_WORDS), min_size=1, max_size=12),
    tail=st.lists(st.sampled_from(_SYMMETRIC_WORDS), min_size=1, max_size=8),
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 3),
)
def test_perturbation_is_symmetric(head, tail, fmt, seed):
    """chosen = rejected + more text. A shared edit T keeps T(rejected) a prefix of T(chosen); one-sided edits
    (a lead-in, typo or dropout on one response only) would break that."""
    rejected = " ".join(head) + " end."
    row = {"prompt": "Why is the sky blue?", "chosen": rejected + " " + " ".join(tail), "rejected": rejected}
    pair = to_format(row, *fmt)
    for variant in PerturbationAugmenter(seed=seed)([pair], k=25)[0]:
        if isinstance(variant["chosen"], str):
            chosen, rejected_text = variant["chosen"], variant["rejected"]
        else:
            chosen, rejected_text = variant["chosen"][-1]["content"], variant["rejected"][-1]["content"]
        assert chosen.startswith(rejected_text), (pair, variant)


def test_perturbation_prompt_free_responses_shared():
    augmenter = PerturbationAugmenter(seed=0)
    pair = {
        "prompt": "Can you tell me what I'm missing?",
        "chosen": "You're missing a semicolon.",
        "rejected": "You're missing nothing.",
    }
    recipes = [r for _, r in augmenter.variants_with_recipes(pair, k=25)]
    assert any(any(step.startswith("prompt:") for step in r) for r in recipes)
    for variant, recipe in augmenter.variants_with_recipes(pair, k=25):
        lead = next((step.split("'")[1] for step in recipe if step.startswith("responses: lead-in")), None)
        if lead:
            assert variant["chosen"].startswith(lead) and variant["rejected"].startswith(lead)
        if "responses: expand contractions" in recipe:
            assert "You are missing" in variant["chosen"] and "You are missing" in variant["rejected"]
        else:
            assert "You're missing" in variant["chosen"] and "You're missing" in variant["rejected"]


def test_perturbation_guards():
    augmenter = PerturbationAugmenter(seed=0)
    # A format constraint in the prompt: no lead-in or wording change on the responses.
    pair = {"prompt": "Reply in JSON only.", "chosen": '{"answer": "don\'t"}', "rejected": "I don't know."}
    for variant in augmenter([pair], k=25)[0]:
        assert variant["chosen"] == pair["chosen"] and variant["rejected"] == pair["rejected"]
    # Code is never edited.
    code = "```python\nx  =  'don't'\n```"
    assert expand_contractions(code) == code and normalize_whitespace(code) == code
    assert normalize_typography("`“x”` “y”") == '`“x”` "y"'
    # Unambiguous contractions only; pronoun contractions only before a word.
    assert expand_contractions("It's fine, I'm sure. DON'T") == "It's fine, I am sure. DO NOT"
    assert (
        contract_contractions("You are right, I do not know who you are.") == "You're right, I don't know who you are."
    )
    assert swap_bullets("- a\n---\n* b") == "* a\n---\n- b"
    # A question mark that makes the question is kept.
    statement_question = {"prompt": "You are coming?", "chosen": "Yes, I am.", "rejected": "Go away."}
    assert all(v["prompt"].rstrip().endswith("?") for v in augmenter([statement_question], k=25)[0])


# Arbitrary unicode, and word salads that hit the edits (contractions, code, bullets, speaker tags, punctuation).
_ANY_TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(_WORDS + ["```", "`", "Human:", "?", ".", "JSON", "Hi", "\r\n"]), max_size=12).map(
        " ".join
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompt=_ANY_TEXT,
    chosen=_ANY_TEXT,
    rejected=_ANY_TEXT,
    fmt=st.sampled_from(FORMATS),
    k=st.integers(0, 30),
    seed=st.integers(0, 2**32),
)
def test_perturbation_random_unicode(prompt, chosen, rejected, fmt, k, seed):
    pair = to_format({"prompt": prompt, "chosen": chosen, "rejected": rejected}, *fmt)
    augmenter = PerturbationAugmenter(seed=seed)
    variants = augmenter([pair], k=k)[0]
    assert len(variants) <= k
    ok, problems = validate_variants(pair, variants, k=max(k, 0))
    assert problems == [] and ok == variants
    before = dict(text_fields(pair))
    for variant in variants:
        assert_same_structure(pair, variant)
        for (key_path, old), (_, new) in zip(text_fields(pair), text_fields(variant)):
            assert new or not old, key_path  # nothing non-empty becomes empty
        assert dict(text_fields(pair)) == before
    assert augmenter([pair], k=k)[0] == variants


# --------------------------------------------------------------------------------------------------------------------
# Format helpers, validate_variants, as_augmenter


@pytest.mark.parametrize("conversational,explicit", FORMATS, ids=FORMAT_IDS)
def test_text_fields_round_trip(conversational, explicit):
    pair = to_format(base_rows(1)[0], conversational, explicit)
    fields = text_fields(pair)
    assert with_texts(pair, [text for _, text in fields]) == pair_core(pair)
    assert with_texts(pair, {}) == pair_core(pair)
    if not explicit:
        prompt_paths = [path for path, _ in fields if path[0] == "prompt"]
        assert prompt_paths  # the implicit prompt is exposed as a shared field
        rebuilt = with_texts(pair, {prompt_paths[-1]: "NEW"})
        assert ("NEW" in json.dumps(rebuilt["chosen"])) and ("NEW" in json.dumps(rebuilt["rejected"]))
    with pytest.raises(KeyError):
        with_texts(pair, {("nope",): "x"})
    with pytest.raises(ValueError, match="aligned"):
        with_texts(pair, ["too", "few"][: len(fields) - 1] if len(fields) > 2 else [])


@settings(max_examples=100, deadline=None)
@given(prompt=_ANY_TEXT, chosen=_ANY_TEXT, rejected=_ANY_TEXT, fmt=st.sampled_from(FORMATS))
def test_text_fields_round_trip_random(prompt, chosen, rejected, fmt):
    pair = to_format({"prompt": prompt, "chosen": chosen, "rejected": rejected}, *fmt)
    assert with_texts(pair, [text for _, text in text_fields(pair)]) == pair_core(pair)


def test_primary_fields_multi_turn():
    user, system = {"role": "user", "content": "hi"}, {"role": "system", "content": "be kind"}
    pair = {
        "prompt": [system, user, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "help me"}],
        "chosen": [{"role": "assistant", "content": "sure"}, {"role": "assistant", "content": "done"}],
        "rejected": [
            {"role": "assistant", "content": "no"},
            {"role": "user", "content": "?"},
            {"role": "assistant", "content": "still no"},
        ],
    }
    assert primary_fields(pair) == [("prompt", 3), ("chosen", 0), ("chosen", 1), ("rejected", 2)]
    implicit = {"chosen": pair["prompt"] + pair["chosen"], "rejected": pair["prompt"] + pair["rejected"]}
    assert primary_fields(implicit) == [("prompt", 3), ("chosen", 4), ("chosen", 5), ("rejected", 6)]
    for source, variants in zip([pair, implicit], PerturbationAugmenter()([pair, implicit], k=25)):
        assert variants and validate_variants(source, variants, k=25)[1] == []
        for variant in variants:
            changed = {path for (path, old), (_, new) in zip(text_fields(source), text_fields(variant)) if old != new}
            assert changed <= set(primary_fields(source))


def test_validate_variants_problems():
    pair = {"prompt": "q", "chosen": "good", "rejected": "bad", "id": 1}
    good = {"prompt": "q!", "chosen": "good", "rejected": "bad"}
    variants = [
        good,
        "not a dict",
        {**good, "id": 1},
        {"prompt": ["q"], "chosen": "good", "rejected": "bad"},
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": "q?", "chosen": "  ", "rejected": "bad"},
        {"prompt": "q?", "chosen": "same", "rejected": "same"},
        dict(good),
        {"prompt": "q?", "chosen": "good", "rejected": "bad"},
        {"prompt": "q.", "chosen": "good", "rejected": "bad"},
    ]
    ok, problems = validate_variants(pair, variants, k=2)
    assert ok == [good, {"prompt": "q?", "chosen": "good", "rejected": "bad"}]
    assert problems == [
        "variant 1: expected a dict, got str",
        "variant 2: keys ['chosen', 'id', 'prompt', 'rejected'] != expected ['chosen', 'prompt', 'rejected']",
        "variant 3: 'prompt' must be a string like the original, got list",
        "variant 4: identical to the original pair",
        "variant 5: empty chosen",
        "variant 6: chosen == rejected",
        "variant 7: duplicate of variant 0",
        "variant 9: beyond k=2",
    ]
    assert validate_variants(pair, None, k=2) == ([], ["expected a list of variants, got NoneType"])


def test_validate_variants_conversational():
    pair = to_format(base_rows(1)[0], conversational=True, explicit=True)
    variant = copy.deepcopy(pair_core(pair))
    variant["prompt"][1]["content"] = "What is it?"
    assert validate_variants(pair, [variant], k=5) == ([variant], [])
    role = copy.deepcopy(variant)
    role["chosen"][0]["role"] = "user"
    shorter = copy.deepcopy(variant)
    shorter["prompt"] = shorter["prompt"][1:]
    extra = copy.deepcopy(variant)
    extra["chosen"][0]["name"] = "bot"
    empty = copy.deepcopy(variant)
    empty["rejected"][0]["content"] = ""
    ok, problems = validate_variants(pair, [role, shorter, extra, empty], k=5)
    assert ok == []
    assert problems[0] == "variant 0: 'chosen'[0] role changed from 'assistant' to 'user'"
    assert problems[1] == "variant 1: 'prompt' must be a list of 2 messages like the original, got 1 messages"
    assert problems[2] == "variant 2: 'chosen'[0] changed more than its content"
    assert problems[3] == "variant 3: empty rejected"


def test_as_augmenter():
    perturb = PerturbationAugmenter()
    assert as_augmenter(perturb) is perturb

    def upper(pairs, k):
        return [[{"chosen": p["chosen"].upper(), "rejected": p["rejected"]}][:k] for p in pairs]

    wrapped = as_augmenter(upper)
    assert isinstance(wrapped, CallableAugmenter) and isinstance(wrapped, Augmenter)
    assert wrapped.name == "upper" and wrapped.variants_per_pair == 1
    assert wrapped([{"chosen": "a", "rejected": "b"}], k=1) == [[{"chosen": "A", "rejected": "b"}]]
    upper.variants_per_pair = 3
    assert CallableAugmenter(upper).variants_per_pair == 3
    assert CallableAugmenter(upper, name="u", variants_per_pair=7).variants_per_pair == 7
    with pytest.raises(TypeError, match="got str: 'paraphrase'"):
        as_augmenter("paraphrase")
    with pytest.raises(TypeError, match="got NoneType"):
        as_augmenter(None)
    with pytest.raises(TypeError, match="pass an instance"):
        as_augmenter(PerturbationAugmenter)
    with pytest.raises(TypeError, match="Augmenter instance or a callable"):
        as_augmenter(42)
    with pytest.raises(ValueError, match="one list of variants per input pair"):
        as_augmenter(lambda pairs, k: [])([{"chosen": "a", "rejected": "b"}], k=1)
    with pytest.raises(TypeError):
        Augmenter()  # abstract


def test_bad_pairs_raise_clear_errors():
    augmenter = PerturbationAugmenter()
    with pytest.raises(ValueError, match="missing"):
        augmenter([{"chosen": "a"}], k=1)
    with pytest.raises(ValueError, match="unsupported pair format"):
        augmenter([{"chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}], k=1)


def test_docstring_examples():
    """Every `>>>` example in the augment modules runs (markdown fences are stripped from expected outputs)."""
    import doctest

    import mars_trl.augment as package
    from mars_trl.augment import base, paraphrase, perturbation

    def strip_fences(text):
        return "".join(line for line in (text or "").splitlines(True) if line.strip() != "```") or text

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    n_examples = 0
    for module in (package, base, perturbation, paraphrase):
        for test in doctest.DocTestFinder().find(module, globs={}):
            for example in test.examples:
                example.want = strip_fences(example.want)
                if example.exc_msg is not None:
                    example.exc_msg = strip_fences(example.exc_msg)
            n_examples += len(test.examples)
            runner.run(test)
    assert n_examples > 30
    assert runner.failures == 0
