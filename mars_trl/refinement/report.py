"""What a MARS run leaves in its output folder: a JSON report, the augmented pool as readable JSONL, PNG plots (margin
distribution per refinement round, budget against margin, accuracy by round) and a markdown page linking them."""

from __future__ import annotations

import json
import os

import numpy as np

from ..names import ROUND, SOURCE, VARIANT

#: The report's augmented pairs as text with their provenance (the checkpoint's `mars_pool.jsonl` holds token ids).
AUGMENTED_PAIRS_FILE = "mars_augmented_pairs.jsonl"


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (servers, CI)
    import matplotlib.pyplot as plt

    return plt


def plot_margin_distributions(history: list[dict], path: str):
    """Histogram of the labelled pairs' margins at each refresh."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    finite = [h["margins"][np.isfinite(h["margins"])] for h in history]  # NaN/inf margins have no place on an axis
    values = np.concatenate(finite)
    bins = np.linspace(values.min(), values.max(), 40) if values.size and values.max() > values.min() else 20
    for h, margins in zip(history, finite):
        ax.hist(margins, bins=bins, histtype="step", linewidth=1.5, label=f"epoch {h['epoch']}")
    ax.axvline(0.0, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="margin D = r(chosen) - r(rejected)", ylabel="labelled pairs", title="Margins at each refresh")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_allocation(history: list[dict], path: str):
    """Variants each labelled pair received against its margin, per round."""
    plt = _figure()
    rounds = [h for h in history if h.get("counts") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    for h in rounds:
        ax.scatter(h["margins"], h["counts"], s=8, alpha=0.6, label=f"round at epoch {h['epoch']}")
    ax.set(xlabel="margin D at allocation", ylabel="augmented variants", title="Budget allocation against margin")
    if rounds:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def accuracy_by_epoch(log_history: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(epoch, accuracy) series from the trainer's log: training batches, and each evaluation set."""
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key == "accuracy" or (key.startswith("eval_") and key.endswith("accuracy")):
                series.setdefault("train" if key == "accuracy" else key[: -len("_accuracy")] or "eval", []).append(
                    (float(entry.get("epoch", 0.0)), float(value))
                )
    return series


def plot_accuracy(log_history: list[dict], refresh_epochs: list[int], path: str):
    """Pairwise accuracy over training, with the refinement rounds marked."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in accuracy_by_epoch(log_history).items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    for epoch in refresh_epochs:
        ax.axvline(epoch, color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="epoch (dotted: refinement rounds)",
        ylabel="pairwise accuracy",
        title="Accuracy by round",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def _tensorboard_writer(trainer):
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and getattr(callback, "tb_writer", None) is not None:
            return callback.tb_writer
    return None


def pool_jsonl(trainer) -> bytes:
    """Every augmented pair as text with its provenance: source pair, round, variant, augmenter."""
    refiner = trainer.refiner
    if refiner is None:
        return b""
    lines = []
    for segment in trainer.pool.segments:
        for source, round_id, variant in zip(segment[SOURCE], segment[ROUND], segment[VARIANT]):
            record = {"source": source, "round": round_id, "variant": variant, "augmenter": refiner.name}
            record.update(refiner.cache[source][variant])
            lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")


def save_report(trainer, output_dir: str, plots: bool = True) -> dict[str, str]:
    """Write the report files of a trained `MarsRewardTrainer` to `output_dir`; returns their paths by name."""
    os.makedirs(output_dir, exist_ok=True)
    callback = trainer.mars_callback
    history = callback.history if callback is not None else []
    refresh_epochs = [h["epoch"] for h in history]
    refiner = trainer.refiner
    files = {}
    report = {
        "settings": {name: getattr(trainer.mars_args, name) for name in trainer.mars_args.mars_field_names()},
        "labelled_pairs": trainer.pool.num_labelled if trainer.pool is not None else None,
        "pool_size": len(trainer.pool) if trainer.pool is not None else None,
        "refreshes": [e for e in trainer.state.log_history if any(k.startswith("mars/") for k in e)],
        "rounds": refiner.reports if refiner is not None else [],
    }
    files["report"] = os.path.join(output_dir, "mars_report.json")
    with open(files["report"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, default=float)
    if refiner is not None:
        files["pool"] = os.path.join(output_dir, AUGMENTED_PAIRS_FILE)
        with open(files["pool"], "wb") as handle:
            handle.write(pool_jsonl(trainer))
    if plots and history:
        writer = _tensorboard_writer(trainer)
        for name, draw in (
            ("margins", lambda p: plot_margin_distributions(history, p)),
            ("allocation", lambda p: plot_allocation(history, p)),
            ("accuracy", lambda p: plot_accuracy(trainer.state.log_history, refresh_epochs, p)),
        ):
            if name == "allocation" and refiner is None:
                continue
            files[f"plot_{name}"] = os.path.join(output_dir, f"mars_{name}.png")
            figure = draw(files[f"plot_{name}"])
            if writer is not None:
                writer.add_figure(f"mars/{name}", figure, global_step=trainer.state.global_step)
            _figure().close(figure)
    files["markdown"] = os.path.join(output_dir, "mars_report.md")
    with open(files["markdown"], "w", encoding="utf-8") as handle:
        handle.write(_markdown(report, files))
    return files


def _markdown(report: dict, files: dict[str, str]) -> str:
    lines = [
        "# MARS training report",
        "",
        f"Labelled pairs: {report['labelled_pairs']}; final pool: {report['pool_size']}.",
        "",
    ]
    if report["rounds"]:
        lines += [
            "| round | epoch | budget | pairs with budget | added | invalid | dropped (max_length) | pool |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["rounds"]:
            lines.append(
                f"| {r['round']} | {r['epoch']} | {r['budget']} | {r['pairs_with_budget']} | {r['added']} | "
                f"{r['variants_invalid']} | {r['dropped_max_length']} | {r['pool_size']} |"
            )
        lines.append("")
    for name, title in (
        ("plot_margins", "Margins at each refresh"),
        ("plot_allocation", "Budget against margin"),
        ("plot_accuracy", "Accuracy by round"),
    ):
        if name in files:
            lines += [f"## {title}", "", f"![{title}]({os.path.basename(files[name])})", ""]
    links = [f"[{os.path.basename(files[k])}]({os.path.basename(files[k])})" for k in ("report", "pool") if k in files]
    lines += ["Data: " + ", ".join(links), ""]
    return "\n".join(lines)
