"""The package ``tritonseek.kernels``: each public name is its launcher whatever was imported before."""

from __future__ import annotations

import subprocess
import sys

# Run in a fresh interpreter: which names the import system has bound on the package depends on what ran before.
_CHILD = r"""
import importlib, pkgutil, types
import tritonseek.kernels as K

for m in pkgutil.iter_modules(K.__path__):
    importlib.import_module("tritonseek.kernels." + m.name)  # every submodule, so each is bound on the package
ns = {}
exec("from tritonseek.kernels import *", ns)
bad = []
for name in K.__all__:
    for how, got in (("attribute", getattr(K, name)), ("import *", ns[name])):
        if name in K._SAME_NAME:  # the module itself, callable as its launcher
            ok = callable(got) and getattr(got, name).__name__ == name
        else:
            ok = isinstance(got, types.FunctionType) and got.__name__ == name
        if not ok:
            bad.append(f"{name} ({how}): {got!r}")
print("\n".join(bad))
"""


def test_every_launcher_name_is_the_launcher_after_importing_every_submodule():
    """Tester (session 20): once moe_routing was imported (it imported the submodule kernels/moe_unpermute.py),
    ``from tritonseek.kernels import moe_unpermute`` gave that module, not the launcher (also through ``import *``).
    The submodule is now moe_combine.py; no submodule shares a launcher's name except those in _SAME_NAME."""
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "", r.stdout
