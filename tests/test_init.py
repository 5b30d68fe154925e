"""The packages import in any order, and pyro_vae's exports resolve."""

import subprocess
import sys

import pytest

import pyro_vae


@pytest.mark.parametrize("first", ["models", "guides", "pyro_vae.registry", "pyro_vae.cli"])
def test_each_package_imports_first_in_a_fresh_interpreter(first):
    result = subprocess.run(
        [sys.executable, "-c", f"import {first}"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_export_resolves():
    for name in pyro_vae.__all__:
        assert getattr(pyro_vae, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pyro_vae.nope  # noqa: B018


def test_no_export_is_shadowed_by_a_submodule():
    # Importing pyro_vae/x.py sets the package attribute x to the module, which would hide a
    # lazily exported function of the same name (pyro_vae.train was once both).
    from pathlib import Path

    modules = {p.stem for p in Path(pyro_vae.__file__).parent.glob("*.py")}
    assert not modules & set(pyro_vae.__all__)
