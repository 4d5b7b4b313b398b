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


def _run_script(script, *args):
    root = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, env=env)


def _assert_interrupted(handler_kept, command=("generate", "-p", "x", "-n", "2")):
    """The CLI command, run in-process, ends as an interrupt does (exit 130, last stderr line "error: interrupted")
    and hands the test's SIGINT handler back."""
    r = runner.invoke(app, list(command), catch_exceptions=False)
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "error: interrupted", r.output
    assert signal.getsignal(signal.SIGINT) is handler_kept


def _ctrl_c_still_works():
    with pytest.raises(KeyboardInterrupt):
        _sigint_now()


def test_generate_interrupted_gives_the_handler_back(monkeypatch, handler_kept):
    from tritonseek.engine.llm import LLM

    monkeypatch.setattr(LLM, "generate", lambda self, *a, **k: _sigint_now())
    _assert_interrupted(handler_kept)
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
    _assert_interrupted(handler_kept, command)
    _ctrl_c_still_works()


def test_an_interrupted_process_ignores_sigint_while_it_exits(tmp_path):
    """The standalone command (exit 130 through sys.exit): SIGINT stays off after the command and at interpreter
    shutdown, so a second Ctrl-C there cannot kill the process silently. Checked from an atexit hook registered before the command (atexit
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
    r = _run_script(script)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: interrupted", r.stderr
    # a process run (app() in standalone mode exits next) keeps SIGINT off from the interrupt on (fixA)
    assert r.stdout.splitlines() == ["after the command: ignored", "at exit: ignored"], r.stdout


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed one, on purpose
def test_a_swallowed_ctrl_c_leaves_ctrl_c_working(monkeypatch, handler_kept):
    """The first KeyboardInterrupt is raised inside a __del__ (Python prints "Exception ignored" and drops it): the
    next Ctrl-C must still interrupt. The handler used to turn SIGINT off before raising, so the run went on to the
    end with exit 0 (session 19 tester, swallow.py)."""
    from tritonseek.engine.llm import LLM

    class Dies:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs inside this loop; its KeyboardInterrupt is swallowed
                pass

    def generate(self, *a, **k):
        Dies()
        assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN
        _sigint_now()

    monkeypatch.setattr(LLM, "generate", generate)
    _assert_interrupted(handler_kept)


def test_an_inherited_sig_ign_is_left_alone(monkeypatch, handler_kept):
    """nohup-like wrappers, ``cmd &`` in a script, ``trap '' INT``: SIGINT arrives ignored and must stay ignored;
    the command runs to its end (it was turned into an interrupt, exit 130)."""
    from tritonseek.engine.llm import LLM

    real = LLM.generate
    seen = []

    def generate(self, *a, **k):
        seen.append(signal.getsignal(signal.SIGINT))
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        return real(self, *a, **k)

    monkeypatch.setattr(LLM, "generate", generate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    r = runner.invoke(app, ["generate", "-p", "x", "-n", "2"], catch_exceptions=False)
    assert r.exit_code == 0 and "new tokens" in r.stderr, r.output
    assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_a_second_ctrl_c_during_shutdown_prints_nothing(tmp_path):
    """Two Ctrl-Cs 1-2 ms apart: the second landed in threading._shutdown (which runs before atexit hooks) with
    Python's default handler back, and printed "Exception ignored in ... threading ... KeyboardInterrupt" after
    ``error: interrupted``. Made deterministic: a non-daemon thread, which shutdown waits for, sends it. An
    in-process caller (standalone_mode=False) still gets Python's handler back."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, threading, time
        from tritonseek import benchrun
        from tritonseek.cli import app

        def second():
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)

        def interrupted(*a, **k):
            if sys.argv[1:] == ["process"]:
                threading.Thread(target=second).start()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

        benchrun.run_suites = interrupted
        if sys.argv[1:] == ["process"]:
            app(["bench", "mla"])
        code = app(["bench", "mla"], standalone_mode=False)
        print(code, signal.getsignal(signal.SIGINT).__name__, flush=True)
    """))
    r = _run_script(script)
    assert r.returncode == 0 and r.stdout == "130 default_int_handler\n", (r.stdout, r.stderr)
    assert r.stderr == "error: interrupted\n"
    r = _run_script(script, "process")
    assert r.returncode == 130 and r.stderr == "error: interrupted\n" and r.stdout == "", (r.stdout, r.stderr)


def test_a_ctrl_c_dropped_by_other_code_leaves_ctrl_c_working(monkeypatch, handler_kept):
    """A KeyboardInterrupt caught and dropped (no "Exception ignored"): the next Ctrl-C interrupts at once."""
    from tritonseek.engine.llm import LLM

    def generate(self, *a, **k):
        try:
            _sigint_now()
        except KeyboardInterrupt:
            pass  # lost
        _sigint_now()

    monkeypatch.setattr(LLM, "generate", generate)
    _assert_interrupted(handler_kept)


def test_a_second_ctrl_c_during_a_long_clean_up_is_dropped(monkeypatch, handler_kept):
    """A second Ctrl-C 1.5 s after the first, while the first's finally block still runs (2.5 s here; an engine
    tearing down): the clean-up finishes (session 19 tester 2, unwind.py: 90c7d1b's 1 s window re-armed too early),
    also in an exception handled inside the clean-up and when the engine turns the interrupt into its own error."""
    from tritonseek.engine.llm import LLM

    done = []

    def generate(self, *a, **k):
        try:
            _sigint_now()
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.5:  # bytecode runs: the handler gets its chance
                pass
            try:
                raise OSError("inside the clean-up")
            except OSError:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100000):
                    pass
            done.append(True)

    monkeypatch.setattr(LLM, "generate", generate)
    r = runner.invoke(app, ["generate", "-p", "x", "-n", "2"], catch_exceptions=False)
    assert done == [True] and r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines()[-1] == "error: interrupted", r.output
    assert signal.getsignal(signal.SIGINT) is handler_kept
