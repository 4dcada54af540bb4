"""pytest plugin: run TRL's own RewardTrainer tests against `mars_trl`, offline.

Loaded with `-p trl_suite_plugin` (compat/ on `sys.path`; `run_trl_suite.py` does both). It

* swaps the classes under test without editing the test file: with `--trl-swap=trainer` (the default)
  `trl.RewardTrainer` is `mars_trl.MarsRewardTrainer`, with `--trl-swap=config` `trl.RewardConfig` is also
  `mars_trl.MarsConfig`, with `--trl-swap=none` nothing changes (the baseline). The names are patched on `trl`
  before the test modules are imported and, as a check, in every collected module's namespace;
* resolves the Hub ids the tests use to the local stand-ins of `--trl-standins DIR` (see `standins.py`) in every
  `from_pretrained` entry point of transformers and in `datasets.load_dataset`; ids without a stand-in go to the
  real resolution, which fails offline (`HF_HUB_OFFLINE=1`) and so shows up as a test that cannot run;
* on a machine without an accelerator, makes `TrainingArguments` default to `use_cpu=True` (TRL configs default
  to `bf16=True`, which transformers refuses on CPU unless `use_cpu` is set), in every mode alike;
* provides `lazy_shared_datadir` (from pytest-datadir) when that plugin is not installed, with a stand-in
  `template.jinja` when the test folder has no `data/template.jinja`;
* prints a table of every test's outcome with a one-line reason, and with `--trl-results PATH` writes it as JSON.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

_SWAPS = ("none", "trainer", "config")
_STATE: dict = {"undo": [], "results": {}, "mode": "none", "ids": {}}


def pytest_addoption(parser):
    group = parser.getgroup("trl-suite", "TRL test suite against mars_trl (offline)")
    group.addoption(
        "--trl-swap",
        choices=_SWAPS,
        default="trainer",
        help="none: stock TRL (baseline); trainer: RewardTrainer -> MarsRewardTrainer; config: also "
        "RewardConfig -> MarsConfig.",
    )
    group.addoption("--trl-standins", default=None, help="Folder of the offline stand-ins (its manifest.json).")
    group.addoption("--trl-results", default=None, help="Write the per-test results as JSON to this path.")


# -- patching helpers ---------------------------------------------------------------------------------------------
def _setattr(owner, name, value) -> None:
    missing = object()
    old = owner.__dict__.get(name, missing) if isinstance(owner, type) else getattr(owner, name, missing)
    setattr(owner, name, value)

    def undo():
        if old is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, old)

    _STATE["undo"].append(undo)


def _resolve(name_or_path):
    if isinstance(name_or_path, str | os.PathLike):
        return _STATE["ids"].get(os.fspath(name_or_path), name_or_path)
    return name_or_path


def _redirect_classmethod(cls) -> None:
    original = cls.__dict__.get("from_pretrained")
    if not isinstance(original, classmethod):
        return
    func = original.__func__

    @functools.wraps(func)
    def from_pretrained(klass, pretrained_model_name_or_path, *args, **kwargs):
        return func(klass, _resolve(pretrained_model_name_or_path), *args, **kwargs)

    _setattr(cls, "from_pretrained", classmethod(from_pretrained))


def _install_hub_redirect(ids: dict[str, str]) -> None:
    import datasets
    import datasets.load
    import transformers
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    _STATE["ids"] = dict(ids)
    # Every AutoModelFor* class carries its own copy of `from_pretrained`, so each one is patched.
    auto_models = [
        obj
        for obj in vars(modeling_auto).values()
        if isinstance(obj, type) and issubclass(obj, _BaseAutoModelClass) and obj is not _BaseAutoModelClass
    ]
    for cls in (
        transformers.AutoConfig,
        transformers.AutoTokenizer,
        transformers.AutoProcessor,
        *auto_models,
        transformers.PreTrainedModel,
        transformers.PretrainedConfig,
        transformers.PreTrainedTokenizerBase,
        transformers.ProcessorMixin,
        transformers.GenerationConfig,
    ):
        _redirect_classmethod(cls)

    original = datasets.load.load_dataset

    @functools.wraps(original)
    def load_dataset(path, *args, **kwargs):
        return original(_resolve(path), *args, **kwargs)

    _setattr(datasets, "load_dataset", load_dataset)
    _setattr(datasets.load, "load_dataset", load_dataset)


def _install_cpu_default() -> bool:
    import torch
    from transformers import TrainingArguments

    if torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return False
    original = TrainingArguments.__post_init__

    @functools.wraps(original)
    def __post_init__(self, *args, **kwargs):
        self.use_cpu = True
        return original(self, *args, **kwargs)

    _setattr(TrainingArguments, "__post_init__", __post_init__)
    return True


def _swap_targets(mode: str) -> dict[str, type]:
    import trl

    if mode == "none":
        return {"RewardTrainer": trl.RewardTrainer, "RewardConfig": trl.RewardConfig}
    from mars_trl import MarsConfig, MarsRewardTrainer  # imported before trl is patched: it subclasses the real ones

    return {"RewardTrainer": MarsRewardTrainer, "RewardConfig": MarsConfig if mode == "config" else trl.RewardConfig}


def _install_swap(mode: str) -> None:
    import trl
    import trl.trainer
    import trl.trainer.reward_trainer

    targets = _swap_targets(mode)
    _STATE["targets"] = targets
    if mode == "none":
        return
    # `trl.trainer.reward_trainer.RewardConfig` stays: RewardTrainer uses it for its default args only.
    _setattr(trl, "RewardTrainer", targets["RewardTrainer"])
    _setattr(trl.trainer, "RewardTrainer", targets["RewardTrainer"])
    _setattr(trl.trainer.reward_trainer, "RewardTrainer", targets["RewardTrainer"])
    if mode == "config":
        _setattr(trl, "RewardConfig", targets["RewardConfig"])
        _setattr(trl.trainer, "RewardConfig", targets["RewardConfig"])


# -- hooks --------------------------------------------------------------------------------------------------------
def pytest_configure(config):
    mode = config.getoption("--trl-swap")
    _STATE["mode"] = mode
    folder = config.getoption("--trl-standins")
    ids = {}
    if folder:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
            ids = json.load(handle)["ids"]
    _install_hub_redirect(ids)
    _STATE["cpu"] = _install_cpu_default()
    _install_swap(mode)


def pytest_unconfigure(config):
    while _STATE["undo"]:
        _STATE["undo"].pop()()


def pytest_report_header(config):
    targets = _STATE.get("targets", {})
    names = ", ".join(f"{k} -> {v.__module__}.{v.__qualname__}" for k, v in targets.items())
    cpu = "; TrainingArguments default use_cpu=True (no accelerator)" if _STATE.get("cpu") else ""
    return [f"trl-suite: swap={_STATE['mode']} ({names}); {len(_STATE['ids'])} Hub ids redirected to stand-ins{cpu}"]


def pytest_collection_modifyitems(session, config, items):
    targets = _STATE.get("targets", {})
    seen = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        for name, cls in targets.items():
            if name in vars(module) and vars(module)[name] is not cls:
                setattr(module, name, cls)  # imported before the patch: swap it in the module too
            if name in vars(module) and vars(module)[name] is not cls:
                raise pytest.UsageError(f"could not swap {name} in {module.__name__}")


if importlib.util.find_spec("pytest_datadir") is None:

    @pytest.fixture
    def lazy_shared_datadir(request, tmp_path) -> Path:
        """Copy of the test folder's `data/` (pytest-datadir's fixture, eagerly), with a stand-in template."""
        from standins import PATH_TEMPLATE

        target = tmp_path / "shared_datadir"
        source = Path(request.fspath.dirname) / "data"
        if source.is_dir():
            shutil.copytree(source, target)
        target.mkdir(exist_ok=True)
        if not (target / "template.jinja").exists():
            (target / "template.jinja").write_text(PATH_TEMPLATE, encoding="utf-8")
        return target


def _reason(report) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # skip: (path, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    # A chained failure (e.g. `pytest.warns` failing because the call inside raised) names the root cause first.
    chain = getattr(longrepr, "chain", None) or []
    crashes = [crash for _, crash, _ in chain if crash is not None]
    if not crashes and getattr(longrepr, "reprcrash", None) is not None:
        crashes = [longrepr.reprcrash]
    texts = [crash.message for crash in crashes] or [str(longrepr)]
    firsts = []
    for text in texts:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        first = lines[0] if lines else ""
        firsts.append(first if len(first) <= 200 else first[:197] + "...")
    return firsts[0] if len(firsts) == 1 else f"{firsts[0]} (then: {firsts[-1]})"


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    results = _STATE["results"]
    entry = results.setdefault(report.nodeid, {"outcome": "passed", "reason": ""})
    if report.when == "call" and report.passed and entry["outcome"] == "passed":
        return
    if report.failed:
        if entry["outcome"] != "failed":  # keep the first failure (call before teardown)
            where = "" if report.when == "call" else f"[{report.when}] "
            entry.update(outcome="failed", reason=where + _reason(report))
    elif report.skipped and entry["outcome"] == "passed":
        entry.update(outcome="skipped", reason=_reason(report))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = _STATE["results"]
    if not results:
        return
    terminalreporter.section(f"trl-suite results (swap={_STATE['mode']})")
    terminalreporter.write_line("| test | outcome | reason |")
    terminalreporter.write_line("|---|---|---|")
    for nodeid, entry in results.items():
        name = nodeid.split("::", 1)[-1]
        terminalreporter.write_line(f"| {name} | {entry['outcome']} | {entry['reason'].replace('|', '/')} |")
    path = config.getoption("--trl-results")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"swap": _STATE["mode"], "results": results}, handle, indent=2)
