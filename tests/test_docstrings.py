"""Every docstring example in the package runs (TRL-style docstrings that carry runnable examples)."""

import doctest
import importlib
import pkgutil

import pytest

import mars_trl

# Examples that need the Hub or long training are fenced as plain code blocks without `>>>`, so they are not run.
MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(mars_trl.__path__, "mars_trl.") if not name.endswith("__main__")
)


class FencedParser(doctest.DocTestParser):
    """Docstrings wrap examples in markdown fences (as TRL's do); a fence line is not expected output."""

    def parse(self, string, name="<string>"):
        lines = [line for line in string.splitlines() if line.strip() not in ("```", "```python", "```py")]
        return super().parse("\n".join(lines), name)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(parser=FencedParser())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
