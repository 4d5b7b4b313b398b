"""Every public launcher's docstring names each of its parameters (or defers them to the launcher it points to).

h3tester s24 #6: ``per_token_group_quant_fp8`` / ``silu_mul_quant_fp8`` take a keyword ``rows_cfg`` that their
docstrings, which list every other argument, did not mention. #5: the package docstring said the ``*_ref``
references live in ``tritonseek.kernels.reference``, which exports none (they are in its submodules).
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

import tritonseek.kernels as K

# docstrings that say "same arguments as" / "settings as" another launcher: the rest is documented there
DEFERS_TO = {"mla_decode_ws": "mla_decode", "router_gate_topk": "gate_topk"}


def _launcher(name):
    f = getattr(K, name)
    return getattr(f, name) if name in K._SAME_NAME else f


@pytest.mark.parametrize("name", K.__all__)
def test_every_parameter_is_in_the_docstring(name):
    fn = _launcher(name)
    doc = fn.__doc__ or ""
    if name in DEFERS_TO:
        assert DEFERS_TO[name] in doc
        doc += _launcher(DEFERS_TO[name]).__doc__
    missing = [p for p in inspect.signature(fn).parameters if not re.search(rf"\b{p}\b", doc)]
    assert not missing, f"{name}: {missing} not in the docstring"


def test_package_docstring_names_importable_references():
    """The reference paths the package docstring gives import (the package itself holds no *_ref)."""
    paths = re.findall(r"``(tritonseek\.kernels\.reference\.\w+\.\w+_ref)``", K.__doc__)
    assert paths
    for path in paths:
        mod, _, fn = path.rpartition(".")
        assert callable(getattr(importlib.import_module(mod), fn)), path
    assert not [n for n in dir(importlib.import_module("tritonseek.kernels.reference")) if n.endswith("_ref")]
