"""Streaming to a standard output whose encoding cannot hold the text (h2tester s25 F9: PYTHONIOENCODING=ascii, a
legacy console code page): the UnicodeEncodeError was caught as an input error, "error: 'ascii' codec can't encode
characters in position 0-1", exit 2, i.e. "a usage or input error". It is a failed write of standard output: exit 1,
one line naming the encoding and the way out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed


def test_text_the_stdout_encoding_cannot_hold(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
           "PYTHONIOENCODING": "ascii"}
    cmd = [sys.executable, "-m", "tritonseek.cli", "generate", "-p", "x = '日本'", "-n", "2"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=120, env=env)
    err = r.stderr.decode("ascii", "replace")
    assert r.returncode == 1, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "could not write the generated text to standard output" in errors[0], err
    assert "encoding ascii" in errors[0] and "PYTHONIOENCODING=utf-8" in errors[0], err
    assert "Traceback" not in err
