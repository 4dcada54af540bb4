"""The `mars-trl` command (also `python -m mars_trl`).

    mars-trl demo                     # the main job on an embedded default: MARS beside RewardTrainer, offline
    mars-trl train  [trl reward flags + MARS flags | --config file.yaml]
    mars-trl evaluate --model_name_or_path DIR --dataset_name FILE_OR_ID [--output metrics.json]
    mars-trl merge  ADAPTER_DIR OUTPUT_DIR [--base_model_name_or_path ...]

Each command parses its own arguments (as `trl`'s CLI does), so `mars-trl train --help` lists every flag. A user
mistake (a missing file, a bad value, a missing extra) prints one line and exits with status 2; set
`MARS_TRL_DEBUG=1` for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ..refinement.checkpoint import MarsStateError


def _demo(argv: list[str]) -> int:
    from . import demo

    parser = demo.add_arguments(argparse.ArgumentParser(prog="mars-trl demo", description=demo.__doc__))
    demo.run(parser.parse_args(argv))
    return 0


def _train(argv: list[str]) -> int:
    from . import train

    parser = train.make_parser(prog="mars-trl train")
    train.main(*parser.parse_args_and_config(args=argv))
    return 0


def _evaluate(argv: list[str]) -> int:
    from . import evaluate

    parser = argparse.ArgumentParser(
        prog="mars-trl evaluate",
        description="Accuracy, ROC-AUC, reward AUC, margin SNR and calibration error of a reward model on preference "
        "pairs, overall and per `subset`.",
    )
    evaluate.run(evaluate.add_arguments(parser).parse_args(argv))
    return 0


def _merge(argv: list[str]) -> int:
    from . import merge

    parser = merge.add_arguments(argparse.ArgumentParser(prog="mars-trl merge", description=merge.__doc__))
    merge.run(parser.parse_args(argv))
    return 0


#: name -> (one-line help, runner). Adding a command is one entry here.
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "demo": ("train MARS beside RewardTrainer on generated data, offline, in minutes", _demo),
    "train": ("train a reward model with MARS (trl reward's flags, plus MARS's)", _train),
    "evaluate": ("score a reward model on preference pairs: accuracy, ROC-AUC, margin SNR, calibration", _evaluate),
    "merge": ("merge a LoRA/QLoRA adapter and its reward head into a plain checkpoint", _merge),
}

USER_ERRORS = (FileNotFoundError, ValueError, ImportError, KeyError, OSError, MarsStateError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mars-trl", description="MARS reward-model training on TRL.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, (text, _) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"mars-trl: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    _, runner = COMMANDS[argv[0]]
    try:
        return runner(argv[1:])
    except USER_ERRORS as err:
        if os.environ.get("MARS_TRL_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mars-trl {argv[0]}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
