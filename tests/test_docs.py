"""The docs stay true to the code: the configuration reference is generated from `MarsArguments` and compared."""

import dataclasses
import os
import re

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


def test_every_field_has_help():
    for f in dataclasses.fields(MarsArguments):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize("page", sorted(p for p in os.listdir(DOCS) if p.endswith(".md")))
def test_pages_are_in_the_site_navigation(page):
    mkdocs = open(os.path.join(DOCS, "..", "mkdocs.yml"), encoding="utf-8").read()
    assert page in mkdocs
