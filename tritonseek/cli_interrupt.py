"""Ctrl-C for the ``tritonseek`` commands (used by tritonseek.cli): one line ``error: interrupted``, exit 130, however
often it is pressed, and the command's clean-up (finally blocks, --tp's rank shutdown) runs to its end. Where a
command turns SIGTERM / SIGHUP into an exception (:class:`TerminationGuard`), likewise one line, ``error: terminated
(SIGTERM)``, exit 128 + the signal number. A clause set as the exception's ``NOTE`` attribute ends the line."""

from __future__ import annotations

import contextvars
import functools
import signal
import sys
import threading

import typer

from tritonseek.cli_output import QuietStderr, StdoutLost

process_run = contextvars.ContextVar("tritonseek_cli_process_run", default=False)  # see tritonseek.cli._App
_stderr = QuietStderr()
_exit_guard: list[bool] = []  # whether ignore_sigint is registered with atexit
_interrupt: list[bool] = []  # set by interrupt_handled while a command runs
_OURS = "_tritonseek_ctrl_c"  # attribute marking a KeyboardInterrupt raised by interruptible's handler


NOTE = "tritonseek_note"  # attribute of a KeyboardInterrupt / Terminated: a clause the one-line error ends with


class Terminated(BaseException):
    """SIGTERM or SIGHUP (``signum``) while a :class:`TerminationGuard` is on. A BaseException, as KeyboardInterrupt
    is: an ``except Exception`` on the way up must not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class TerminationGuard:
    """SIGTERM (kill, a job scheduler) and SIGHUP (a closed session) raise :class:`Terminated` in the main thread from
    construction until :meth:`close`, instead of ending the process at once, so a command can save what it finished
    (generate --prompts-file: the finished batches' rows; h3fix s25). :func:`interruptible` reports it in one line,
    exit 128 + the signal number. An inherited SIG_IGN (nohup's SIGHUP) stays; outside the main thread, or with
    ``active`` False, nothing is installed. The first signal turns both off (a second one must not cut the saving
    short); so does :meth:`hold`."""

    def __init__(self, active: bool = True):
        main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        sigs = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                if s and active and main and signal.getsignal(s) != signal.SIG_IGN]
        self._previous = {s: signal.signal(s, self._raise) for s in sigs}
        self._held = False

    def _raise(self, signum, frame):
        self.hold()
        if _ours_unwinding():  # a Ctrl-C is being handled already: its clean-up (saving the rows) must finish
            return
        raise Terminated(signum)

    def hold(self) -> None:
        """Ignore both signals until :meth:`close` (during a clean-up)."""
        self._held = True
        for s in self._previous:
            signal.signal(s, signal.SIG_IGN)

    def close(self) -> None:
        """Put the handlers found at construction back (None, one set outside Python: the default). After a
        :meth:`hold` in a process run (the process exits next; see tritonseek.cli._App) both stay ignored, as SIGINT
        does after a Ctrl-C: a --tp rank gets torchrun's SIGINT and then its SIGTERM, and the default action of the
        second one, back at close, ended rank 0 before it printed where it kept the rows (h1fix s26)."""
        if self._held and process_run.get():
            self._previous = {}
            return
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous = {}


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_handled() -> None:
    """Call where a Ctrl-C's KeyboardInterrupt is caught and the command is ending: further SIGINTs are ignored (a
    second one cut the clean-up or the exit short), also during interpreter shutdown (atexit; see interruptible)."""
    if threading.current_thread() is not threading.main_thread():
        return
    ignore_sigint()
    if not _exit_guard:
        import atexit

        atexit.register(ignore_sigint)
        _exit_guard.append(True)
    _interrupt.append(True)


def _ours_unwinding() -> bool:
    """Whether a KeyboardInterrupt raised by our handler, or a :class:`Terminated`, is on its way up: it is being
    handled by an except, finally or ``with`` exit somewhere in the main thread's stack (sys.exc_info), directly or as
    the context of an exception raised there (an engine that turns it into its own error). Caught and dropped, or
    swallowed in a __del__ or a weakref callback ("Exception ignored"), it is no longer there. While one is, a SIGINT
    or SIGTERM / SIGHUP is dropped: under ``--tp`` torchrun stops the ranks with the signal it got (SIGINT) and then
    the SIGTERM the CLI sends it, and the second one cut rank 0's saving of the finished rows short (h1fix s26)."""
    e, seen = sys.exc_info()[1], set()
    while e is not None and id(e) not in seen:
        if getattr(e, _OURS, False) or isinstance(e, Terminated):
            return True
        seen.add(id(e))
        e = e.__context__
    return False


def _note(e: BaseException) -> str:
    note = getattr(e, NOTE, "")
    return note if isinstance(note, str) else ""


def interruptible(command):
    """Ctrl-C during a command: one line ``error: interrupted``, exit 130, however often it is pressed.

    A SIGINT raises KeyboardInterrupt (as Python's default handler does). Further ones are dropped while that
    KeyboardInterrupt unwinds, i.e. until the except path here (or --tp's clean-up) handles it and turns SIGINT off:
    a second Ctrl-C cut the engine's finally blocks short (session 18), also one 1.5 s later while a 2.5 s clean-up
    still ran (the 1 s window of 90c7d1b; session 19 tester 2). Whether it still unwinds is read from the
    interpreter's exception state (_ours_unwinding), not from a timer; so a KeyboardInterrupt swallowed in a __del__
    or a weakref callback, or caught and dropped by other code, leaves Ctrl-C working: the next one raises again
    (turning SIGINT off in the handler itself left Ctrl-C dead for the whole run; session 19 tester). An inherited
    SIG_IGN (nohup, ``cmd &`` in a script, ``trap '' INT``) is left alone.

    After an interrupt, a process run (see tritonseek.cli._App: the process exits next) keeps SIGINT off through the
    exit: with the handler restored, a second Ctrl-C 1-2 ms after the first hit threading._shutdown, which runs before
    atexit hooks, and printed a traceback after ``error: interrupted``. An in-process run (CliRunner,
    ``standalone_mode=False``, an interactive session) gets its caller's handler back when the command ends (returns,
    raises, or exits 130), and an atexit hook turns SIGINT off again in case the process exits afterwards.

    A :class:`Terminated` (SIGTERM / SIGHUP under a TerminationGuard) ends in ``error: terminated (SIGTERM)``, exit
    128 + the signal number, also when SIGINT came in ignored.
    """

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return sigint_run(*args, **kwargs)
        except Terminated as e:  # also where SIGINT came in ignored (``cmd &`` in a script)
            _stderr.write(f"error: terminated ({signal.Signals(e.signum).name}){_note(e)}\n")
            raise typer.Exit(128 + e.signum) from None

    def sigint_run(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread only
            return command(*args, **kwargs)
        previous = signal.getsignal(signal.SIGINT)
        if previous == signal.SIG_IGN:
            return command(*args, **kwargs)

        def on_sigint(signum, frame):
            if _ours_unwinding():  # part of the same interrupt: let its clean-up finish
                return
            e = KeyboardInterrupt()
            setattr(e, _OURS, True)
            raise e

        signal.signal(signal.SIGINT, on_sigint)
        _interrupt.clear()
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as e:
            interrupt_handled()
            try:
                sys.stdout.flush()
            except (AttributeError, OSError, ValueError, StdoutLost):  # closed (None), full or a broken pipe: nothing to keep
                pass
            _stderr.write(("\n" if _stderr.isatty() else "") + f"error: interrupted{_note(e)}\n")  # after the ^C echo
            raise typer.Exit(130) from None
        finally:
            if not (_interrupt and process_run.get()):
                # None: a handler set outside Python, which cannot be put back; Python's default stands in
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            _interrupt.clear()

    return run
