"""Helpers of the Gluon kernels' CPU compile tests: compile for sm_90a in a fresh process, and ptxas -v.

The compile runs in a child Python without TRITON_INTERPRET: once the CPU interpreter has run a ``tl``
kernel in a process (the other kernels' tests), Triton's language functions stay patched there and a
Gluon kernel calling a nested jit function no longer compiles ("'block_argument' object has no attribute
'dtype'", seen with triton 3.6 and an empty Triton cache). Compiling needs no GPU.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton

_CHILD = """
import importlib, pickle, sys
module, fn, args = pickle.load(sys.stdin.buffer)
kernel = getattr(importlib.import_module(module), fn)(*args)
sys.stdout.write(kernel.asm["ptx"])
"""


def ptx_in_fresh_process(module: str, fn: str, *args) -> str:
    """PTX of ``module.fn(*args)`` (a function returning a compiled kernel), compiled in a child process."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps((module, fn, args)), capture_output=True,
                       env=env, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return r.stdout.decode()


def ptxas_report(ptx: str) -> str:
    """ptxas -v output (stderr) for sm_90a, with Triton's bundled ptxas."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, "--gpu-name", "sm_90a", "-v", path, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stderr


def spill_store_bytes(report: str) -> list[int]:
    """Spill-store byte counts, one per function, parsed from a ptxas -v report. A plain substring test for
    "0 bytes spill stores" also matches "240 bytes spill stores", so callers compare these numbers instead."""
    counts = [int(x) for x in re.findall(r"(\d+) bytes spill stores", report)]
    assert counts, f"no spill line in the ptxas report: {report[-1000:]}"
    return counts


def sass_of(ptx: str) -> list[str]:
    """SASS lines of a PTX module: ptxas for sm_90a, then the cuobjdump that ships with Triton."""
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as d:
        src, cubin = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        subprocess.run([os.path.join(bindir, "ptxas"), "--gpu-name", "sm_90a", src, "-o", cubin], check=True,
                       capture_output=True)
        return subprocess.run([os.path.join(bindir, "cuobjdump"), "-sass", cubin], check=True, capture_output=True,
                              text=True).stdout.splitlines()
