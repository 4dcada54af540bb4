"""The package's front door: `import mars_trl` is cheap and every public name resolves."""

import subprocess
import sys

import pytest

import mars_trl


def test_import_loads_no_training_stack():
    code = "import sys, mars_trl; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_resolve_on_first_use():
    assert sorted(mars_trl._EXPORTS) == mars_trl.__all__
    for name in mars_trl.__all__:
        value = getattr(mars_trl, name)
        assert value.__name__ == name and value.__module__ == f"mars_trl.{mars_trl._EXPORTS[name]}"
    assert set(mars_trl.__all__) <= set(dir(mars_trl))
    with pytest.raises(AttributeError, match="has no attribute 'MarsTrainer'"):
        mars_trl.MarsTrainer  # noqa: B018
