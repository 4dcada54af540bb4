"""The docs stay true to the code: the configuration reference and `MarsArguments`' docstring are generated from the
dataclass's fields and compared."""

import dataclasses
import os
import re
import textwrap

import pytest

from mars_trl import MarsArguments

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")
CONFIG_PAGE = os.path.join(DOCS, "configuration.md")
START, END = "<!-- fields:start -->", "<!-- fields:end -->"


def fields_table() -> str:
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(MarsArguments):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f.metadata["help"].replace("|", "\\|")
        if "choices" in f.metadata:
            text += " Choices: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        rows.append(f"| `{f.name}` | `{default!r}` | {text} |")
    return "\n".join(rows)


def test_configuration_reference_matches_the_dataclass():
    page = open(CONFIG_PAGE, encoding="utf-8").read()
    expected = f"{START}\n{fields_table()}\n{END}"
    if expected in page:
        return
    if os.environ.get("MARS_UPDATE_DOCS"):  # rewrite it, and still fail: the stale page was what was checked
        fresh = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: expected, page, flags=re.S)
        open(CONFIG_PAGE, "w", encoding="utf-8").write(fresh)
        pytest.fail("docs/configuration.md was stale and has been rewritten: review it and rerun the tests")
    pytest.fail("docs/configuration.md is stale: rerun with MARS_UPDATE_DOCS=1 pytest tests/test_docs.py")


CONFIG_MODULE = os.path.join(os.path.dirname(__file__), "..", "mars_trl", "config.py")
GROUPS = (  # (header, does a field belong to it), in the order of the fields
    ("Parameters that control margin-aware sampling", lambda name: not name.startswith(("augment", "semantic_", "resume_"))),
    ("Parameters that control the augmentation rounds", lambda name: name.startswith("augment")),
    ("Parameters that control semantic rewriting (MARS v2)", lambda name: name.startswith("semantic_")),
    ("Parameters that control resuming from a checkpoint", lambda name: name.startswith("resume_")),
)


def docstring_parameters() -> str:
    """The `Parameters:` section of `MarsArguments`' docstring, in RewardConfig's style, from the fields' help."""
    lines = ["    Parameters:"]
    for header, member in GROUPS:
        lines += [f"        > {header}", ""]
        for f in dataclasses.fields(MarsArguments):
            if not member(f.name):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            # The annotation as written: HfArgumentParser replaces `f.type` with the resolved type once it has parsed one.
            kind = MarsArguments.__annotations__[f.name]
            lines.append(f"        {f.name} (`{kind}`, *optional*, defaults to `{default!r}`):")
            lines += textwrap.wrap(f.metadata["help"], 119, initial_indent=" " * 12, subsequent_indent=" " * 12)
        lines.append("")
    return "\n".join(lines)


def test_mars_arguments_docstring_lists_every_field():
    source = open(CONFIG_MODULE, encoding="utf-8").read()
    expected = docstring_parameters()
    if expected in source:
        return
    if os.environ.get("MARS_UPDATE_DOCS"):
        start = source.index("    Parameters:\n", source.index("class MarsArguments"))
        end = source.index("    Example:\n", start)
        open(CONFIG_MODULE, "w", encoding="utf-8").write(source[:start] + expected + "\n" + source[end:])
        pytest.fail("MarsArguments' docstring was stale and has been rewritten: review it and rerun the tests")
    pytest.fail("MarsArguments' docstring is stale: rerun with MARS_UPDATE_DOCS=1 pytest tests/test_docs.py")


def test_every_field_has_help():
    for f in dataclasses.fields(MarsArguments):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize("page", sorted(p for p in os.listdir(DOCS) if p.endswith(".md")))
def test_pages_are_in_the_site_navigation(page):
    mkdocs = open(os.path.join(DOCS, "..", "mkdocs.yml"), encoding="utf-8").read()
    assert page in mkdocs
