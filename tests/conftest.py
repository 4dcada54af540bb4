"""Offline test rig: tiny models built from configs and tokenizers trained on the fly; no Hub access anywhere."""

from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Under `-n`, the workers share the cores: each torch (and each subprocess a test starts) gets its share, as
    # oversubscribed thread pools run far slower than one thread each.
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

import pytest
from datasets import Dataset
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

# ../shared/data beside the checkout; MARS_SHARED_DATA points a clone elsewhere at it.
SHARED_DATA = os.path.abspath(
    os.environ.get("MARS_SHARED_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our team", "the model", "a bird", "the river"]
_VERBS = ["likes", "sees", "helps", "answers", "writes", "reads", "finds", "builds"]
_OBJECTS = ["the ball", "a letter", "the code", "a song", "the answer", "a book", "the plan", "a house"]
GOOD = ["correct", "helpful", "clear", "kind", "accurate", "polite"]
BAD = ["wrong", "rude", "vague", "unsafe", "false", "sloppy"]


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """Standard explicit-prompt rows with a learnable signal: chosen answers are 'good', rejected 'bad'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = f"question: what {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} ?"
        base = _sentence(rng)
        rows.append(
            {
                "prompt": prompt,
                "chosen": f"{base} and it is {rng.choice(GOOD)}",
                "rejected": f"{base} and it is {rng.choice(BAD)}",
            }
        )
    return rows


def _corpus() -> list[str]:
    rng = random.Random(123)
    words = set(" ".join(_SUBJECTS + _VERBS + _OBJECTS + GOOD + BAD).split())
    words |= {"question:", "what", "?", "and", "it", "is", "user", "assistant", "system", "hello", "paraphrase:"}
    lines = [" ".join(sorted(words))]
    lines += [f"{_sentence(rng)} and it is {rng.choice(GOOD + BAD)}" for _ in range(300)]
    return lines


def _word_level(special: list[str], post: processors.PostProcessor | None) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]" if "[UNK]" in special else "<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=special, min_frequency=1)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if post is not None:
        tok.post_processor = post
    return tok


@pytest.fixture(scope="session")
def decoder_tokenizer():
    special = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = _word_level(special, None)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


@pytest.fixture(scope="session")
def encoder_tokenizer():
    """BERT-style: [CLS] ... [SEP], a pad token, and no eos token (stock RewardTrainer crashes on these)."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _word_level(special, None)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    hf.chat_template = CHAT_TEMPLATE.replace("</s>", " ")
    assert hf.eos_token is None
    return hf


def make_decoder(tokenizer, seed: int = 0, **overrides):
    import torch

    torch.manual_seed(seed)
    sizes = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        **{**sizes, **overrides},
    )
    return LlamaForSequenceClassification(config)


def make_encoder(tokenizer, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="session")
def decoder_dir(tmp_path_factory, decoder_tokenizer):
    """A tiny decoder saved to disk, so the `model="path"` loading branch runs too."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_decoder(decoder_tokenizer).save_pretrained(path)
    decoder_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def standard_rows():
    return preference_rows(48, seed=0)


def to_format(rows: list[dict], conversational: bool, explicit_prompt: bool) -> Dataset:
    out = []
    for row in rows:
        if conversational:
            prompt = [{"role": "user", "content": row["prompt"]}]
            chosen = [{"role": "assistant", "content": row["chosen"]}]
            rejected = [{"role": "assistant", "content": row["rejected"]}]
            out.append(
                {"prompt": prompt, "chosen": chosen, "rejected": rejected}
                if explicit_prompt
                else {"chosen": prompt + chosen, "rejected": prompt + rejected}
            )
        else:
            out.append(
                dict(row)
                if explicit_prompt
                else {"chosen": f"{row['prompt']} {row['chosen']}", "rejected": f"{row['prompt']} {row['rejected']}"}
            )
    return Dataset.from_list(out)


def cpu_args(output_dir, **overrides):
    """RewardConfig/MarsConfig keyword arguments that keep a CPU step fast and the run quiet."""
    args = dict(
        output_dir=str(output_dir),
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        use_cpu=True,
        max_length=64,
    )
    args.update(overrides)
    return args


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without the plugin (`-p no:xdist`) it is simply unused
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4 (each holds its own torch and the session's tiny models)."""
    return max(1, min(4, os.cpu_count() or 1))
