#!/usr/bin/env python
"""Run TRL's own `tests/test_reward_trainer.py` against `mars_trl`, offline.

    python compat/run_trl_suite.py PATH/TO/trl/tests/test_reward_trainer.py [--config] [--stock] [--compare]
        [--standins DIR] [--workdir DIR] [--json PATH] [-- EXTRA PYTEST ARGS]

Default: `trl.RewardTrainer` is swapped for `mars_trl.MarsRewardTrainer`. `--config` also swaps `trl.RewardConfig`
for `mars_trl.MarsConfig`. `--stock` swaps nothing (the baseline: what passes offline with the stand-ins at all).
`--compare` runs the baseline and then the swap, and classifies every test (a test that passes stock and fails
swapped is a compatibility failure; one that fails both is a stand-in or environment limitation).

The test file is not modified. Hub ids are redirected to tiny local stand-ins (`standins.py`, built once into
`--standins`), and the class swap is done by the pytest plugin `trl_suite_plugin.py`. When the file does not sit
in a TRL checkout (no `testing_utils.py` beside it), it is staged in a scratch package next to a minimal
`testing_utils.py` (`TrlTestCase`, `require_peft`). Everything runs with `HF_HUB_OFFLINE=1`, one process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(tempfile.gettempdir(), "mars_trl_compat")

TESTING_UTILS_SHIM = """\
# Minimal stand-in for the helpers TRL's tests/test_reward_trainer.py imports from tests/testing_utils.py.
import pytest
from transformers.utils import is_peft_available

require_peft = pytest.mark.skipif(not is_peft_available(), reason="test requires peft")


class TrlTestCase:
    @pytest.fixture(autouse=True)
    def set_tmp_dir(self, tmp_path):
        self.tmp_dir = str(tmp_path)
"""

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
    "WANDB_MODE": "disabled",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
}


def _stage(test_file: str, workdir: str) -> str:
    """The path pytest should run: the file in place in a TRL checkout, else a staged copy with a shim."""
    folder = os.path.dirname(test_file)
    if os.path.isfile(os.path.join(folder, "testing_utils.py")):
        return test_file
    package = os.path.join(workdir, "trl_tests")
    if os.path.isdir(package):
        shutil.rmtree(package)
    os.makedirs(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    with open(os.path.join(package, "testing_utils.py"), "w", encoding="utf-8") as handle:
        handle.write(TESTING_UTILS_SHIM)
    shutil.copy(test_file, package)
    if os.path.isdir(os.path.join(folder, "data")):
        shutil.copytree(os.path.join(folder, "data"), os.path.join(package, "data"))
    return os.path.join(package, os.path.basename(test_file))


def _run(target: str, swap: str, standins: str, workdir: str, results: str, extra: list[str]) -> int:
    cwd = os.path.join(workdir, f"run-{swap}")  # trainers built without `args` write `<model>-Reward/` here
    if os.path.isdir(cwd):
        shutil.rmtree(cwd)
    os.makedirs(cwd)
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_DATASETS_CACHE"] = os.path.join(workdir, "datasets_cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        "-m",
        "pytest",
        target,
        "-p",
        "trl_suite_plugin",
        f"--trl-swap={swap}",
        f"--trl-standins={standins}",
        f"--trl-results={results}",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        *extra,
    ]
    print("+ " + " ".join(command), flush=True)
    return subprocess.call(command, cwd=cwd, env=env)


def _verdict(stock: str | None, swapped: str | None) -> str:
    if stock is None or swapped is None:
        return "not run in both"
    if stock == "passed":
        return "ok" if swapped == "passed" else "COMPATIBILITY FAILURE"
    if stock == "skipped":
        return "skipped (both)" if swapped == "skipped" else f"skipped stock, {swapped} swapped"
    return "fails stock too: stand-in/environment" if swapped != "passed" else "passes only swapped"


def _compare(stock_path: str, swapped_path: str, swap: str) -> int:
    with open(stock_path, encoding="utf-8") as handle:
        stock = json.load(handle)["results"]
    with open(swapped_path, encoding="utf-8") as handle:
        swapped = json.load(handle)["results"]
    print(f"\n==== stock vs swap={swap} ====")
    print("| test | stock | swapped | verdict | reason (swapped, else stock) |")
    print("|---|---|---|---|---|")
    failures = 0
    for nodeid in list(dict.fromkeys([*stock, *swapped])):
        a, b = stock.get(nodeid, {}), swapped.get(nodeid, {})
        verdict = _verdict(a.get("outcome"), b.get("outcome"))
        failures += verdict == "COMPATIBILITY FAILURE"
        reason = (b.get("reason") or a.get("reason") or "").replace("|", "/")
        print(f"| {nodeid.split('::', 1)[-1]} | {a.get('outcome')} | {b.get('outcome')} | {verdict} | {reason} |")
    print(f"\n{failures} compatibility failure(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_file", help="TRL's tests/test_reward_trainer.py (a checkout's, or fetched by hand)")
    parser.add_argument("--config", action="store_true", help="also swap RewardConfig for MarsConfig")
    parser.add_argument("--stock", action="store_true", help="swap nothing: the offline baseline")
    parser.add_argument("--compare", action="store_true", help="run the baseline, then the swap, and classify")
    parser.add_argument("--standins", default=os.path.join(DEFAULT_ROOT, "standins"), help="stand-ins folder")
    parser.add_argument("--workdir", default=os.path.join(DEFAULT_ROOT, "work"), help="scratch folder")
    parser.add_argument("--json", default=None, help="write the per-test results of the (last) run here")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the stand-ins")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.stock and (args.config or args.compare):
        parser.error("--stock runs the baseline alone; it does not combine with --config or --compare")

    test_file = os.path.abspath(args.test_file)
    if not os.path.isfile(test_file):
        parser.error(f"no such file: {test_file}")
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    sys.path.insert(0, HERE)
    import standins

    standins_dir = os.path.abspath(args.standins)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    print(f"stand-ins: {standins_dir}", flush=True)
    standins.build(standins_dir, force=args.rebuild)
    target = _stage(test_file, workdir)

    swap = "none" if args.stock else ("config" if args.config else "trainer")
    results = args.json or os.path.join(workdir, f"results-{swap}.json")
    if not args.compare:
        return _run(target, swap, standins_dir, workdir, results, extra)
    stock_results = os.path.join(workdir, "results-none.json")
    _run(target, "none", standins_dir, workdir, stock_results, extra)
    _run(target, swap, standins_dir, workdir, results, extra)
    return _compare(stock_results, results, swap)


if __name__ == "__main__":
    sys.exit(main())
