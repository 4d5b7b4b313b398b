"""SIGINT after a command that handled Ctrl-C in-process (session 19, h5fix): the caller's handler comes back when
the command ends, also when it ends in an error; only a process that is exiting keeps SIGINT off (a second Ctrl-C
during interpreter shutdown killed it silently). Session 18 left SIGINT ignored for good after one interrupt, so an
in-process caller (CliRunner, a notebook) could no longer be stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonseek.cli import app

runner = CliRunner()


def _sigint_now():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the handler runs at the next bytecode boundary; 5 s only if it never does
    raise AssertionError("SIGINT did not interrupt")


@pytest.fixture
def handler_kept():
    """The test's SIGINT handler, put back afterwards whatever the code under test left installed."""
    before = signal.getsignal(signal.SIGINT)
    yield before
    signal.signal(signal.SIGINT, before)


def _ctrl_c_still_works():
    with pytest.raises(KeyboardInterrupt):
        _sigint_now()


def test_generate_interrupted_gives_the_handler_back(monkeypatch, handler_kept):
    from tritonseek.engine.llm import LLM

    monkeypatch.setattr(LLM, "generate", lambda self, *a, **k: _sigint_now())
    r = runner.invoke(app, ["generate", "-p", "x", "-n", "2"], catch_exceptions=False)
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "error: interrupted", r.output
    assert signal.getsignal(signal.SIGINT) is handler_kept
    _ctrl_c_still_works()


def test_ctrl_c_turned_into_an_error_gives_the_handler_back(monkeypatch, handler_kept):
    """The engine catches the KeyboardInterrupt and fails with its own error: the command ends in that error (one
    line, exit 2), not in 'interrupted', and SIGINT works again afterwards."""
    from tritonseek.engine.llm import LLM

    def generate(self, *a, **k):
        try:
            _sigint_now()
        except KeyboardInterrupt:
            raise ValueError("generation stopped half-way") from None

    monkeypatch.setattr(LLM, "generate", generate)
    r = runner.invoke(app, ["generate", "-p", "x", "-n", "2"], catch_exceptions=False)
    assert r.exit_code == 2 and "generation stopped half-way" in r.stderr, r.output
    assert signal.getsignal(signal.SIGINT) is handler_kept
    _ctrl_c_still_works()


@pytest.mark.parametrize("command", [["bench", "mla"], ["warmup", "--max-batch", "1"]])
def test_bench_and_warmup_interrupted_give_the_handler_back(monkeypatch, handler_kept, command):
    import torch

    from tritonseek import benchrun
    from tritonseek.engine.llm import LLM

    monkeypatch.setattr(benchrun, "run_suites", lambda *a, **k: _sigint_now())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # warmup: past its GPU check, Ctrl-C while loading
    monkeypatch.setattr(LLM, "__init__", lambda self, *a, **k: _sigint_now())
    r = runner.invoke(app, command, catch_exceptions=False)
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "error: interrupted", r.output
    assert signal.getsignal(signal.SIGINT) is handler_kept
    _ctrl_c_still_works()


def test_an_interrupted_process_ignores_sigint_while_it_exits(tmp_path):
    """The standalone command (exit 130 through sys.exit): at interpreter shutdown SIGINT is off again, so a second
    Ctrl-C there cannot kill the process silently. Checked from an atexit hook registered before the command (atexit
    runs hooks last-in first-out: this one runs after the CLI's)."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import atexit, os, signal, sys, time
        atexit.register(lambda: print("at exit:", "ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN
                                      else signal.getsignal(signal.SIGINT), flush=True))
        from tritonseek import benchrun
        from tritonseek.cli import app

        def interrupted(*a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

        benchrun.run_suites = interrupted
        sys.argv = ["tritonseek", "bench", "mla"]
        try:
            app()
        except SystemExit as e:
            print("after the command:", "ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN
                  else signal.getsignal(signal.SIGINT).__name__, flush=True)
            raise
    """))
    root = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: interrupted", r.stderr
    assert r.stdout.splitlines() == ["after the command: default_int_handler", "at exit: ignored"], r.stdout
