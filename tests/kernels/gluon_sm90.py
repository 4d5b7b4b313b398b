"""Helpers of the Gluon kernels' CPU compile tests: compile for sm_90a in a fresh process, and ptxas -v.

The compile runs in a child Python without TRITON_INTERPRET. Once the CPU interpreter has run a ``tl``
kernel in a process (the other kernels' tests), Triton's language functions stay patched there, and a
Gluon kernel calling a nested jit function no longer compiles ("'block_argument' object has no attribute
'dtype'", seen with triton 3.6 and an empty Triton cache). One child serves every compile of a pytest
session. Compiling needs no GPU.
"""

from __future__ import annotations

import atexit
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import triton

# The child serves compile requests until its stdin closes: one (module, fn, args) pickle in, one
# (ok, ptx or traceback) pickle out on the original stdout (fd 1 is pointed at stderr, so prints and C-level
# output cannot corrupt the stream).
_CHILD = """
import importlib, os, pickle, sys, traceback
results = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
sys.stdout = sys.stderr
while True:
    try:
        module, fn, args = pickle.load(sys.stdin.buffer)
    except EOFError:
        break
    try:
        reply = (True, getattr(importlib.import_module(module), fn)(*args).asm["ptx"])
    except BaseException:
        reply = (False, traceback.format_exc())
    pickle.dump(reply, results)
    results.flush()
"""


class _CompileServer:
    """One child Python (no TRITON_INTERPRET) compiling kernel after kernel. It replaces a fresh process per
    compile: each paid ~3-5 s of torch/triton/test-module imports on the 2-core CI machine. The child stays
    "fresh" in the sense that matters, because it never runs the interpreter. A failed compile closes it, and a
    call whose environment differs from the one it was started with gets a new one."""

    def __init__(self, env: dict, root: Path):
        self.env = env
        self.log = tempfile.TemporaryFile()  # the child's stderr: a file, so a chatty compile cannot fill a pipe
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, cwd=root)

    def compile(self, module: str, fn: str, args: tuple, timeout: float) -> tuple[bool, str]:
        import select

        try:
            pickle.dump((module, fn, args), self.proc.stdin)
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                return False, f"no answer from the compile process in {timeout:.0f} s"
            return pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError) as e:
            return False, f"compile process died ({type(e).__name__}, exit {self.proc.poll()})"

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


_idle: list[_CompileServer] = []  # servers between calls; a call from another thread takes (or starts) its own
_lock = threading.Lock()
_MAX_IDLE = 2


def _close_idle() -> None:
    with _lock:
        while _idle:
            _idle.pop().close()


atexit.register(_close_idle)


def ptx_in_fresh_process(module: str, fn: str, *args) -> str:
    """PTX of ``module.fn(*args)`` (a function returning a compiled kernel), compiled in a child process that has
    never run Triton's interpreter (reused by the calls of a test session; see :class:`_CompileServer`).
    Thread-safe: concurrent calls (a fixture compiling configs in parallel) each get their own child."""
    root = Path(__file__).resolve().parents[2]
    # PYTEST_CURRENT_TEST changes with every test: kept out, so one child serves the session
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    with _lock:
        server = next((sv for sv in _idle if sv.env == env and sv.proc.poll() is None), None)
        if server is not None:
            _idle.remove(server)
    if server is None:
        server = _CompileServer(env, root)
    ok, text = server.compile(module, fn, args, timeout=600)
    if not ok:
        text += "\n" + server.stderr_tail()
        server.close()  # the next compile starts from a clean process
    else:
        with _lock:
            _idle.append(server)
            stale = _idle[:-_MAX_IDLE]
            del _idle[:-_MAX_IDLE]
        for sv in stale:
            sv.close()
    assert ok, text[-6000:]
    return text


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
