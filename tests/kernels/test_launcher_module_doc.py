"""The module-named launchers (mla_decode, mla_decode_ws, mla_prefill) show their launcher's signature and docstring.

h3tester s24 #3: ``inspect.signature(tritonseek.kernels.mla_decode)`` was ``(*args, **kwargs)`` and its ``__doc__``
the module docstring, so help() / IDEs lost the parameter list the other launchers show.
"""

from __future__ import annotations

import inspect
import pydoc

import pytest

import tritonseek.kernels as K


@pytest.mark.parametrize("name", sorted(K._SAME_NAME))
def test_signature_and_doc_are_the_launchers(name):
    mod = getattr(K, name)
    fn = getattr(mod, name)
    assert inspect.signature(mod) == inspect.signature(fn)
    assert "check_ids" in inspect.signature(mod).parameters  # a real parameter, not (*args, **kwargs)
    doc = mod.__doc__
    assert doc.startswith(inspect.cleandoc(fn.__doc__))
    assert f"Module tritonseek.kernels.{name}:" in doc  # the module's own docstring follows
    assert inspect.cleandoc(mod.__dict__["__doc__"]) in doc
    assert inspect.cleandoc(fn.__doc__).splitlines()[0] in pydoc.render_doc(mod, renderer=pydoc.plaintext)
