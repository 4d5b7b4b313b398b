"""``tritonseek generate`` when standard output cannot be written (session 19 tester findings, fixA): ``> /dev/full``
gave an OSError traceback, a closed stdout (``>&-``) an AttributeError traceback. Now: one line on stderr, exit 1
(a write that failed) or 2 (closed before the run), and --output's rows are written whatever stdout does. Real
processes: the failures are in the descriptors, which CliRunner replaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed
GEN = f'"{sys.executable}" -m tritonseek.cli generate'


def _sh(cmd: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(["sh", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _one_error(r, code: int, needle: str) -> None:
    assert r.returncode == code, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower() or "exception" in ln.lower()]
    assert errors == [errors[0]] and errors[0].startswith("error: ") and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_streaming_to_a_full_device(tmp_path):
    r = _sh(f'{GEN} -p "def f(x):" -n 4 > /dev/full', tmp_path)
    _one_error(r, 1, "could not write the generated text to standard output (No space left on device)")
    (tmp_path / "in.jsonl").write_text('{"prompt": "x = 1"}\n')
    r = _sh(f"{GEN} --prompts-file in.jsonl -n 2 -o /dev/stdout > /dev/full", tmp_path)
    _one_error(r, 1, "could not write --output /dev/stdout (No space left on device)")  # a failed write: 1, not 2
    r = _sh(f"{GEN} --prompts-file in.jsonl -n 2 -o /dev/full", tmp_path)  # --output alone (session 19 tester 2)
    assert r.returncode == 1 and "could not write --output /dev/full (No space left on device)" in r.stderr, r
    assert json.loads(r.stdout)["prompt"] == "x = 1"  # the rows went to stdout instead


def test_stdout_closed(tmp_path):
    r = _sh(f'{GEN} -p "def f(x):" -n 4 >&-', tmp_path)
    _one_error(r, 2, "standard output is closed")
    (tmp_path / "in.jsonl").write_text('{"prompt": "x = 1"}\n')
    r = _sh(f"{GEN} --prompts-file in.jsonl -n 2 -o out.jsonl >&-", tmp_path)  # the rows do not need stdout
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["prompt"] == "x = 1"


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_an_unwritable_stderr_costs_nothing(tmp_path, redirect):
    """A closed or full stderr: the notes and stats are lost, the results are not (the first note raised OSError:
    exit 1 before anything was generated, no rows)."""
    if "full" in redirect and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    r = _sh(f'{GEN} -p "def f(x):" -n 4 {redirect}', tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("def f(x):") and len(r.stdout) > len("def f(x):\n"), r
    (tmp_path / "in.jsonl").write_text('{"prompt": "x = 1"}\n')
    r = _sh(f"{GEN} --prompts-file in.jsonl -n 2 -o out.jsonl {redirect}", tmp_path)
    assert r.returncode == 0, r
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["prompt"] == "x = 1"
    r = _sh(f"{GEN} -p x --top-p 3 {redirect}", tmp_path)  # a user error keeps its exit code
    assert r.returncode == 2 and r.stdout == "", r


def test_a_reader_that_goes_away_is_quiet(tmp_path):
    # `| head` closes the pipe after 5 bytes while the text streams: no message, no traceback (fixA's first version
    # printed "error: could not write ... (Broken pipe)"; before session 19 it was quiet too). The exit status is 1, as
    # Python's docs advise for EPIPE; the shell reports head's.
    r = _sh(f'{GEN} -p "def fibonacci(n):" -n 48 | head -c 5; echo " rc=$?"', tmp_path)
    assert r.stdout.endswith(" rc=0\n") and len(r.stdout) == len(" rc=0\n") + 5, r.stdout
    assert "error" not in r.stderr.lower() and "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr


CLI = f'"{sys.executable}" -m tritonseek.cli'


@pytest.mark.parametrize("command", ["info", "--help", "generate --help"])
def test_other_commands_to_a_full_or_closed_stdout(tmp_path, command):
    """Outside generate a failed stdout write was a rich traceback (``info > /dev/full``, ``--help > /dev/full``) or
    nothing at all with exit 0 (``info >&-``: the text was dropped); now one line and exit 1 (session 19 tester 2)."""
    if os.path.exists("/dev/full"):
        _one_error(_sh(f"{CLI} {command} > /dev/full", tmp_path), 1,
                   "could not write to standard output (No space left on device)")
    _one_error(_sh(f"{CLI} {command} >&-", tmp_path), 1, "could not write to standard output (it is closed)")
    r = _sh(f"{CLI} {command}", tmp_path)  # the control: it does print
    assert r.returncode == 0 and len(r.stdout.splitlines()) > 3, r


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_a_usage_error_keeps_exit_2_when_stderr_cannot_be_written(tmp_path, redirect):
    """click's usage message raised OSError on a full stderr, which turned exit 2 into 1 (session 19 tester 2)."""
    if "full" in redirect and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    for args in ("generate -p x --max-new-tokens abc", "no-such-command"):
        r = _sh(f"{CLI} {args} {redirect}", tmp_path)
        assert r.returncode == 2 and r.stdout == "", (args, r)
