"""LoRA and QLoRA reward models: the head is trained and saved, 4-bit runs for real on CPU, save/reload/merge agree."""

import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import cpu_args, make_decoder, make_encoder, preference_rows, to_format
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, LlamaModel, TrainerCallback
from trl.trainer.reward_trainer import DataCollatorForPreference

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.peft.adapter_config import MarsPeftWarning, prepare_peft_config
from mars_trl.peft.heads import RewardHeadNotFoundError, find_head_modules, find_reward_head
from mars_trl.peft.loading import load_reward_model
from mars_trl.peft.merge import merge_adapter
from mars_trl.peft.quantization import qlora_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TARGETS = {"decoder": ["q_proj", "v_proj"], "encoder": ["query", "value"]}


def _env():
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_DISABLED="true"
    )
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(command, timeout=300):
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, encoder_tokenizer):
    path = tmp_path_factory.mktemp("tiny-bert")
    make_encoder(encoder_tokenizer).save_pretrained(path)
    encoder_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def qlora_decoder_dir(tmp_path_factory, decoder_tokenizer):
    # Layer sizes that are multiples of 64, as in real models.
    path = tmp_path_factory.mktemp("tiny-llama-64")
    make_decoder(decoder_tokenizer, hidden_size=64, intermediate_size=128, num_key_value_heads=4).save_pretrained(path)
    decoder_tokenizer.save_pretrained(path)
    return str(path)


def held_out_texts(rows):
    return [f"{r['prompt']} {r['chosen']}" for r in rows] + [f"{r['prompt']} {r['rejected']}" for r in rows]


@torch.no_grad()
def scores(model, tokenizer, texts):
    was_training = model.training
    model.eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    batch.pop("token_type_ids", None)
    out = model(**batch).logits.squeeze(-1).float().numpy()
    model.train(was_training)
    return out


@torch.no_grad()
def pair_margins(model, dataset, pad_token_id):
    """r(chosen) - r(rejected) of the prepared pairs, by an independent forward pass."""
    was_training = model.training
    model.eval()
    batch = DataCollatorForPreference(pad_token_id=pad_token_id)(
        [{"chosen_ids": row["chosen_ids"], "rejected_ids": row["rejected_ids"]} for row in dataset]
    )
    rewards = model(**batch, use_cache=False).logits.squeeze(-1).double()
    model.train(was_training)
    chosen, rejected = torch.chunk(rewards, 2)
    return (chosen - rejected).numpy()


def peft_warnings(caught):
    return [w for w in caught if issubclass(w.category, MarsPeftWarning)]


# -- head detection ---------------------------------------------------------------------------------------------------
def test_head_detection_on_models_configs_and_names(decoder_tokenizer, encoder_tokenizer, decoder_dir, encoder_dir):
    decoder, encoder = make_decoder(decoder_tokenizer), make_encoder(encoder_tokenizer)
    assert find_reward_head(decoder) == "score"  # Llama-style decoder
    assert find_reward_head(encoder) == "classifier"  # BERT
    assert find_reward_head(decoder.config) == "score"
    assert find_reward_head(encoder.config) == "classifier"
    assert find_reward_head(decoder_dir) == "score"  # a path: only its config is read
    assert find_reward_head(encoder_dir) == "classifier"
    assert find_reward_head("LlamaForSequenceClassification") == "score"
    assert find_reward_head("BertForSequenceClassification") == "classifier"
    assert find_reward_head("qwen2") == "score"
    assert find_reward_head("bart") == "classification_head"
    assert find_head_modules("DistilBertForSequenceClassification") == ["pre_classifier", "classifier"]
    wrapped = get_peft_model(decoder, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj"]))
    assert find_reward_head(wrapped) == "score"


def test_head_that_cannot_be_found(tmp_path, decoder_tokenizer, standard_rows):
    with pytest.raises(RewardHeadNotFoundError, match="PerceiverForSequenceClassification"):
        find_reward_head("perceiver")
    backbone = LlamaModel(make_decoder(decoder_tokenizer).config)  # no head at all
    with pytest.raises(RewardHeadNotFoundError, match=r"LlamaModel.*modules_to_save"):
        MarsRewardTrainer(
            model=backbone,
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=to_format(standard_rows[:16], False, True),
            processing_class=decoder_tokenizer,
            peft_config=LoraConfig(r=4, target_modules=["q_proj"]),
        )
    # Naming the head yourself is the way out the message gives.
    named = prepare_peft_config(LoraConfig(task_type="SEQ_CLS", modules_to_save=["my_head"]), backbone)
    assert named.modules_to_save == ["my_head"]


def test_peft_config_is_fixed_with_one_warning_only_when_needed(decoder_tokenizer):
    decoder = make_decoder(decoder_tokenizer)
    cases = [
        # (config as given, model, expected warning, expected modules_to_save)
        (LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), decoder, True, ["score"]),
        (
            LoraConfig(task_type="CAUSAL_LM", r=4, modules_to_save=["score"]),
            decoder,
            True,
            ["score"],
        ),  # TRL CLI default
        (LoraConfig(r=4, modules_to_save=["score"]), decoder, False, ["score"]),
        (LoraConfig(task_type="SEQ_CLS", r=4), decoder, False, ["score"]),
        (LoraConfig(r=4), "BertForSequenceClassification", True, ["classifier"]),
        (LoraConfig(task_type="SEQ_CLS", r=4), "bart", True, ["classification_head"]),  # PEFT does not know its name
        (LoraConfig(task_type="SEQ_CLS", r=4), "distilbert", False, ["pre_classifier", "classifier"]),
    ]
    for given, model, warns, modules in cases:
        before = (given.task_type, given.modules_to_save)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fixed = prepare_peft_config(given, model)
        assert len(peft_warnings(caught)) == int(warns), (given, [str(w.message) for w in caught])
        assert fixed.task_type == "SEQ_CLS"
        assert set(modules) <= set(fixed.modules_to_save)
        assert (given.task_type, given.modules_to_save) == before  # the caller's config is not touched
    assert prepare_peft_config(None, decoder) is None


# -- LoRA: train, save, reload, merge ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["decoder", "encoder"])
def test_lora_without_task_type_trains_saves_reloads_and_merges(
    tmp_path, arch, decoder_dir, encoder_dir, decoder_tokenizer, encoder_tokenizer
):
    path, tokenizer = (decoder_dir, decoder_tokenizer) if arch == "decoder" else (encoder_dir, encoder_tokenizer)
    head = "score" if arch == "decoder" else "classifier"
    rows = preference_rows(48, seed=1)
    given = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch])  # no task_type, no modules_to_save
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = MarsRewardTrainer(
            model=path,
            args=MarsConfig(**cpu_args(tmp_path / "run", num_train_epochs=2)),
            train_dataset=to_format(rows[:40], False, True),
            peft_config=given,
        )
    [warning] = peft_warnings(caught)
    assert f"`{head}`" in str(warning.message) and "modules_to_save" in str(warning.message)
    assert given.task_type is None and given.modules_to_save is None
    model = trainer.model
    assert isinstance(model, PeftModel)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    head_params = [name for name in trainable if f"{head}.modules_to_save" in name]
    assert head_params and not any(f"{head}." in n and "lora_" in n for n in trainable)  # fully trained, no LoRA
    head_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in head_params}

    trainer.train()
    after = dict(model.named_parameters())
    # The head learned (its bias, if any, gets no gradient: it cancels in r(chosen) - r(rejected)).
    assert all(not torch.equal(after[n].detach(), w) for n, w in head_before.items() if n.endswith("weight"))
    assert np.all(np.isfinite(trainer.margins))
    texts = held_out_texts(rows[40:])
    trained = scores(model, tokenizer, texts)

    adapter = tmp_path / "adapter"
    trainer.save_model(str(adapter))
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(f"{head}." in key and "lora" not in key for key in saved)  # the head is in the saved adapter

    reloaded = load_reward_model(str(adapter))
    np.testing.assert_allclose(scores(reloaded, tokenizer, texts), trained, atol=1e-5)

    merged_dir = merge_adapter(str(adapter), str(tmp_path / "merged"))
    assert not os.path.exists(os.path.join(merged_dir, "adapter_config.json"))
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert not isinstance(merged, PeftModel) and merged.config.num_labels == 1
    assert not any("lora" in key or "modules_to_save" in key for key in merged.state_dict())
    np.testing.assert_allclose(scores(merged, tokenizer, texts), trained, atol=1e-5)


def test_gradient_checkpointing_with_lora(tmp_path, decoder_tokenizer, standard_rows, monkeypatch):
    import mars_trl.refinement.callback

    batch_sizes = []
    real_score_margins = mars_trl.refinement.callback.score_margins

    def recording(*args, **kwargs):
        batch_sizes.append(kwargs["batch_size"])
        return real_score_margins(*args, **kwargs)

    monkeypatch.setattr(mars_trl.refinement.callback, "score_margins", recording)
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, gradient_checkpointing=True, num_train_epochs=2)),
        train_dataset=to_format(standard_rows[:16], False, True),
        processing_class=decoder_tokenizer,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    assert trainer.model.get_base_model().is_gradient_checkpointing
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.detach().abs().sum() > 0 for p in lora_b)  # gradients reached the checkpointed layers
    assert len([e for e in trainer.state.log_history if "mars/margin_mean" in e]) == 1
    assert batch_sizes == [trainer.args.per_device_eval_batch_size]  # the scoring pass uses the eval batch size


def test_peft_model_that_leaves_the_head_out_is_flagged(tmp_path, decoder_tokenizer, standard_rows):
    headless = get_peft_model(make_decoder(decoder_tokenizer), LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.warns(MarsPeftWarning, match="`score` is not in its adapter's `modules_to_save`"):
        MarsRewardTrainer(
            model=headless,
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=to_format(standard_rows[:16], False, True),
            processing_class=decoder_tokenizer,
        )
    with pytest.warns(MarsPeftWarning):
        fixed = prepare_peft_config(LoraConfig(r=4, target_modules=["q_proj"]), "LlamaForSequenceClassification")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MarsPeftWarning)
        MarsRewardTrainer(
            model=get_peft_model(make_decoder(decoder_tokenizer), fixed),
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=to_format(standard_rows[:16], False, True),
            processing_class=decoder_tokenizer,
        )


# -- QLoRA, for real, on CPU ------------------------------------------------------------------------------------------
def test_qlora_end_to_end_on_cpu(tmp_path, qlora_decoder_dir, decoder_tokenizer):
    bnb = pytest.importorskip("bitsandbytes", reason="install the `qlora` extra")
    rows = preference_rows(40, seed=2)
    quantization = qlora_config(torch.float32)  # nf4, double quantization; fp32 compute on CPU
    assert quantization.bnb_4bit_quant_type == "nf4" and quantization.bnb_4bit_use_double_quant

    class MarginCheck(TrainerCallback):
        """At the first step after the refresh the model is the one that was scored: compare with our own pass."""

        seen = None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3 and self.seen is None:  # 24 pairs / batch 8: first step of epoch 1
                labelled = trainer.train_dataset
                expected = pair_margins(trainer.model, labelled, decoder_tokenizer.pad_token_id)
                self.seen = (trainer.margins[: len(labelled)], expected)

    class LayerZeroLora(TrainerCallback):
        """LoRA weights of the first layer when epoch 1 (after the eval-mode scoring pass) begins and at the end."""

        snapshots = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            if state.epoch and not self.snapshots:
                self.snapshots.append(first_layer_lora(trainer.model))

        def on_train_end(self, args, state, control, **kwargs):
            self.snapshots.append(first_layer_lora(trainer.model))

    def first_layer_lora(model):
        return torch.cat(
            [p.detach().flatten().clone() for n, p in model.named_parameters() if "layers.0." in n and "lora_" in n]
        )

    check, layer_zero = MarginCheck(), LayerZeroLora()
    with pytest.warns(MarsPeftWarning, match="`score`"):
        trainer = MarsRewardTrainer(
            model=qlora_decoder_dir,
            args=MarsConfig(
                **cpu_args(
                    tmp_path / "run",
                    num_train_epochs=2,
                    gradient_checkpointing=True,
                    eval_strategy="epoch",
                    augmenter="perturbation",
                )
            ),
            train_dataset=to_format(rows[:24], False, True),
            eval_dataset=to_format(rows[24:32], False, True),
            quantization_config=quantization,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),  # no task type
            callbacks=[check, layer_zero],
        )
    base = trainer.model.get_base_model()
    assert base.is_loaded_in_4bit and base._mars_kbit_prepared and base.is_gradient_checkpointing
    q_proj = base.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.quant_state.nested  # double quantization
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    # Gradients still reach the first layer's adapter after eval-mode passes (margin scoring, evaluation): without
    # keep_4bit_weights_unpacked, bitsandbytes repacks the weights for a CPU kernel with no backward.
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    assert len(layer_zero.snapshots) == 2 and not torch.equal(*layer_zero.snapshots)

    assert check.seen is not None
    np.testing.assert_allclose(check.seen[0], check.seen[1], rtol=1e-4, atol=1e-5)  # margin scoring on 4-bit
    refreshes = [e for e in trainer.state.log_history if "mars/margin_mean" in e]
    assert len(refreshes) == 1 and len(trainer.pool) > 24  # an augmentation round ran on the quantized model
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert all(p.detach().abs().sum() > 0 for p in lora_b)
    metrics = trainer.evaluate()
    eval_pairs = trainer.eval_dataset
    expected = pair_margins(trainer.model, eval_pairs, decoder_tokenizer.pad_token_id)
    assert metrics["eval_margin"] == pytest.approx(expected.mean(), abs=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx((expected > 0).mean())

    texts = held_out_texts(rows[32:])
    trained = scores(trainer.model, decoder_tokenizer, texts)
    adapter = tmp_path / "adapter"
    trainer.save_model(str(adapter))
    reloaded = load_reward_model(str(adapter), quantization_config=quantization)
    assert reloaded.get_base_model().is_loaded_in_4bit
    np.testing.assert_allclose(scores(reloaded, decoder_tokenizer, texts), trained, atol=1e-5)
    # Dequantizing the same 4-bit base before merging reproduces the trained model...
    merged = merge_adapter(str(adapter), str(tmp_path / "merged"), quantization_config=quantization)
    merged = AutoModelForSequenceClassification.from_pretrained(merged)
    assert getattr(merged.config, "quantization_config", None) is None
    np.testing.assert_allclose(scores(merged, decoder_tokenizer, texts), trained, atol=1e-4)
    # ...merging into the full-precision base is close, up to the 4-bit quantization error.
    plain = AutoModelForSequenceClassification.from_pretrained(merge_adapter(str(adapter), str(tmp_path / "fp")))
    assert np.abs(scores(plain, decoder_tokenizer, texts) - trained).max() < 0.1


def test_qlora_on_an_encoder_keeps_the_classifier_unquantized(tmp_path, encoder_dir, encoder_tokenizer):
    # transformers would quantize BERT's `classifier` (it keeps decoders' `score` in full precision); the head is
    # trained in full through modules_to_save, so MARS leaves it out of quantization, in training and on reload.
    bnb = pytest.importorskip("bitsandbytes")
    rows = preference_rows(32, seed=6)
    quantization = qlora_config(torch.float32)
    trainer = MarsRewardTrainer(
        model=encoder_dir,
        args=MarsConfig(**cpu_args(tmp_path / "run", num_train_epochs=2)),
        train_dataset=to_format(rows[:24], False, True),
        quantization_config=quantization,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]),
    )
    base = trainer.model.get_base_model()
    assert isinstance(base.bert.encoder.layer[0].attention.self.query.base_layer, bnb.nn.Linear4bit)
    assert not isinstance(base.classifier.original_module, bnb.nn.Linear4bit)
    assert quantization.llm_int8_skip_modules is None  # the user's config is not modified
    trainer.train()
    texts = held_out_texts(rows[24:])
    trained = scores(trainer.model, encoder_tokenizer, texts)
    trainer.save_model(str(tmp_path / "adapter"))
    reloaded = load_reward_model(str(tmp_path / "adapter"), quantization_config=quantization)
    np.testing.assert_allclose(scores(reloaded, encoder_tokenizer, texts), trained, atol=1e-5)



def test_qlora_with_a_bf16_scoring_pass(tmp_path, encoder_dir, encoder_tokenizer):
    """`margin_scoring_precision='bf16'` on a QLoRA model in fp32: the eval-mode pass runs the 4-bit layers under
    bf16 autocast, its margins match an fp32 pass up to bf16 rounding, and the adapters keep learning after it."""
    pytest.importorskip("bitsandbytes")
    rows = preference_rows(32, seed=7)

    class AfterRefresh(TrainerCallback):
        snapshots = []

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3 and not self.snapshots:  # 24 pairs / batch 8: epoch 1 starts after the refresh
                labelled = trainer.train_dataset
                expected = pair_margins(trainer.model, labelled, encoder_tokenizer.pad_token_id)
                self.snapshots.append((trainer.margins[: len(labelled)].copy(), expected, lora()))

    def lora():
        return torch.cat([p.detach().flatten().clone() for n, p in trainer.model.named_parameters() if "lora_" in n])

    check = AfterRefresh()
    trainer = MarsRewardTrainer(
        model=encoder_dir,
        args=MarsConfig(**cpu_args(tmp_path / "run", num_train_epochs=2), margin_scoring_precision="bf16"),
        train_dataset=to_format(rows[:24], False, True),
        quantization_config=qlora_config(torch.float32),
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]),
        callbacks=[check],
    )
    trainer.train()
    scored, expected, before = check.snapshots[0]
    assert np.isfinite(scored).all() and not np.array_equal(scored, expected)
    # bf16 keeps 8 significant bits: rewards near 0.6 round by up to 0.0023 each, and the bf16 matmuls inside add
    # about as much again (measured: 0.009 at most).
    np.testing.assert_allclose(scored, expected, atol=0.02)
    assert not torch.equal(lora(), before)


# -- clear errors -----------------------------------------------------------------------------------------------------
def test_4bit_without_bitsandbytes_names_the_extra(tmp_path, decoder_dir, standard_rows, monkeypatch):
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    hint = re.escape('pip install "mars-trl[qlora]"')
    with pytest.raises(ImportError, match=hint):
        MarsRewardTrainer(
            model=decoder_dir,
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=to_format(standard_rows[:16], False, True),
            quantization_config=quantization,
            peft_config=LoraConfig(r=4, target_modules=["q_proj"]),
        )
    with pytest.raises(ImportError, match=hint):
        MarsRewardTrainer(
            model=decoder_dir,
            args=MarsConfig(**cpu_args(tmp_path, model_init_kwargs={"quantization_config": quantization})),
            train_dataset=to_format(standard_rows[:16], False, True),
            peft_config=LoraConfig(r=4, target_modules=["q_proj"]),
        )
    with pytest.raises(ImportError, match=hint):
        qlora_config()


def test_4bit_without_peft_config(tmp_path, decoder_dir, standard_rows):
    pytest.importorskip("bitsandbytes")
    with pytest.raises(ValueError, match="QLoRA"):
        MarsRewardTrainer(
            model=decoder_dir,
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=to_format(standard_rows[:16], False, True),
            quantization_config=qlora_config(torch.float32),
        )


def test_adapter_together_with_peft_config(tmp_path, decoder_dir, decoder_tokenizer, standard_rows):
    data = to_format(standard_rows[:16], False, True)
    new_config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["v_proj"])
    peft_model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(decoder_dir),
        LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj"]),
    )
    with pytest.raises(ValueError, match="Both an adapter and a `peft_config`"):
        MarsRewardTrainer(
            model=peft_model,
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=data,
            processing_class=decoder_tokenizer,
            peft_config=new_config,
        )
    adapter = str(tmp_path / "adapter")
    peft_model.save_pretrained(adapter)
    decoder_tokenizer.save_pretrained(adapter)
    with pytest.raises(ValueError, match=r"is a saved PEFT adapter.*mars-trl merge"):
        MarsRewardTrainer(
            model=adapter, args=MarsConfig(**cpu_args(tmp_path)), train_dataset=data, peft_config=new_config
        )
    # The first way out the message names: keep training that adapter.
    trainer = MarsRewardTrainer(
        model=load_reward_model(adapter, is_trainable=True),
        args=MarsConfig(**cpu_args(tmp_path, max_steps=2)),
        train_dataset=data,
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    assert any("lora_B" in n and p.detach().abs().sum() > 0 for n, p in trainer.model.named_parameters())


# -- command lines ----------------------------------------------------------------------------------------------------
def test_merge_help(capsys):
    from mars_trl.cli.merge import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])  # what `python -m mars_trl.cli.merge --help` runs (the module entry is run for real below)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "adapter_dir" in out and "--load_in_4bit" in out and "--base_model_name_or_path" in out


def test_merge_cli_writes_a_checkpoint_that_loads_without_peft(tmp_path, decoder_dir, decoder_tokenizer):
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(decoder_dir),
        prepare_peft_config(LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]), decoder_dir),
    )
    with torch.no_grad():  # a non-trivial adapter and head, as after training
        for name, param in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.2)
    adapter, merged = str(tmp_path / "adapter"), str(tmp_path / "merged")
    model.save_pretrained(adapter)
    decoder_tokenizer.save_pretrained(adapter)
    texts = held_out_texts(preference_rows(6, seed=3))
    expected = scores(model, decoder_tokenizer, texts)

    _run([sys.executable, "-m", "mars_trl.cli.merge", adapter, merged, "--dtype", "float32"])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(merged))
    probe = (
        "import json, sys\n"
        "sys.modules['peft'] = None  # PEFT is not installed\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "path, texts = sys.argv[1], json.loads(sys.argv[2])\n"
        "model = AutoModelForSequenceClassification.from_pretrained(path).eval()\n"
        "tok = AutoTokenizer.from_pretrained(path)\n"
        "out = model(**tok(texts, padding=True, return_tensors='pt')).logits.squeeze(-1)\n"
        "print(json.dumps(out.tolist()))\n"
    )
    done = _run([sys.executable, "-c", probe, merged, json.dumps(texts)])
    got = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_example_script_runs_qlora_on_cpu(tmp_path, qlora_decoder_dir, decoder_tokenizer):
    pytest.importorskip("bitsandbytes")
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in preference_rows(40, seed=4)) + "\n")
    out, merged = tmp_path / "out", tmp_path / "merged"
    done = _run(
        [sys.executable, "examples/qlora_single_gpu.py"]
        + ["--model_name_or_path", qlora_decoder_dir, "--dataset_name", str(data), "--output_dir", str(out)]
        + ["--lora_r", "4", "--lora_alpha", "8", "--test_fraction", "0.2"]
        + ["--lora_target_modules", "q_proj", "v_proj", "--num_train_epochs", "2", "--max_length", "64"]
        + ["--per_device_train_batch_size", "8", "--eval_strategy", "epoch", "--save_strategy", "no"]
        + ["--report_to", "none", "--disable_tqdm", "true", "--merged_output_dir", str(merged)]
    )
    assert "eval_accuracy" in done.stdout + done.stderr
    assert (out / "adapter_config.json").exists()
    assert any(k.endswith("score.weight") for k in load_file(str(out / "adapter_model.safetensors")))
    texts = held_out_texts(preference_rows(4, seed=5))
    adapter = load_reward_model(str(out), quantization_config=qlora_config(torch.float32))
    merged_model = AutoModelForSequenceClassification.from_pretrained(str(merged))
    np.testing.assert_allclose(
        scores(merged_model, decoder_tokenizer, texts), scores(adapter, decoder_tokenizer, texts), atol=1e-5
    )


@pytest.mark.slow
def test_benchmark_runs(tmp_path):
    _run(
        [sys.executable, "benchmarks/peft_memory.py", "--output", str(tmp_path / "bench")]
        + ["--hidden_size", "64", "--num_layers", "2", "--intermediate_size", "128", "--vocab_size", "500"]
        + ["--steps", "4", "--num_pairs", "16", "--skip_steps", "1"],
        timeout=600,
    )
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [row["mode"] for row in results] == ["full", "lora", "qlora"]
    assert results[0]["peak_rss_mb_ratio"] == 1.0 and all(row["median_step_s"] > 0 for row in results)
    assert "| qlora |" in (tmp_path / "bench.md").read_text()
