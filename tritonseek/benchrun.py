"""``tritonseek bench``: run the benchmark suites of a source checkout and collect their rows.

Each suite is a script in ``benchmarks/`` (bench_mla.py, bench_fp8_gemm.py, bench_moe.py,
bench_mtp.py, bench_e2e.py, bench_fused_small.py, bench_cold_start.py, bench_e2e_tp.py) that writes JSON lines to
``--out``; this module runs them one after
another, appends each suite's rows to ``benchmarks/results/<gpu>.jsonl`` as that suite finishes, and returns the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from tritonseek.cli_output import (
    PARTIAL,
    OutputPathError,
    OutputTarget,
    check_output,
    flush_streams_on,
    name_limit,
    open_in_place,
    write_output,
)

SUITES = {
    "mla": "bench_mla.py",
    "fp8_gemm": "bench_fp8_gemm.py",
    "moe": "bench_moe.py",
    "mtp": "bench_mtp.py",
    "e2e": "bench_e2e.py",
    "fused_small": "bench_fused_small.py",
    "cold_start": "bench_cold_start.py",
    "e2e_tp": "bench_e2e_tp.py",  # two GPUs (TP2/EP2 vs TP1); prints a skip line and no rows on one GPU
}


class BenchError(RuntimeError):
    """The benchmarks cannot run here (no GPU, no source checkout, unknown suite, failed script)."""


class RowsFile:
    """The ``--out`` JSON-lines file of a benchmark script, opened only when its first line is written.

    A script that opened ``--out`` with mode "w" before its work emptied the user's file when the run then failed
    (``bench_mtp.py --dry`` without the interpreter, session 18); through this class a run that measured nothing
    leaves the file as it was. mode "w" truncates at the first write, "a" appends. Every write is flushed, so a run
    stopped by its time limit keeps the rows it measured. Use as ``with RowsFile(path) as f: f.write(line)``.

    The path is resolved as ``tritonseek generate --output`` resolves it (cli_output.check_output): /dev/stdout or
    /dev/fd/N is written to that open descriptor at its offset (``--out /dev/stdout >> log`` appends; opening
    /proc/self/fd/1 anew truncated the log), a FIFO or character device in place.
    Raises:
        ValueError: mode is not "w" or "a".
        OSError: at the first write, when the path cannot be written (a symlink loop, a missing folder, ...).
    """

    def __init__(self, path, mode: str = "w"):
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        self.path, self.mode, self._f, self._fd = path, mode, None, None

    def write(self, text: str) -> int:
        if self._f is None:
            self._f, self._fd = _open_rows(self.path, self.mode)
        if self._fd is not None:  # the script's own prints to that descriptor come before the row
            flush_streams_on(self._fd)
        n = self._f.write(text)
        self._f.flush()
        return n

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    @property
    def written(self) -> bool:
        """Whether anything was written (the file was opened)."""
        return self._f is not None

    def __enter__(self) -> "RowsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StagedRows(RowsFile):
    """An ``--out`` whose existing file only a finished run replaces: rows go to ``<path>.partial`` as they are
    measured (each line flushed), renamed over ``path`` when the ``with`` block ends without an exception. An
    interrupted or failed run (Ctrl-C, an exception, SIGTERM) keeps ``path`` as it was and leaves its rows in
    ``<path>.partial``; a run that measured nothing touches neither (session 18: Ctrl-C on bench_mla replaced 2 old
    rows by 11 partial ones). A path that does not exist yet (nothing to keep: a GPU job's fresh output folder, where a
    run stopped by its time limit keeps the rows it measured in ``path``) or is not a regular file (a FIFO,
    /dev/stdout, even when the shell sent stdout to a regular file: it is written at the descriptor's offset, never
    renamed over) is written through, row by row.

    A run that fails without raising (a script that reports a failed suite and goes on, then exits 1) calls
    :meth:`fail` before the block ends: the old file is kept as after an exception (session 18: bench_moe replaced it
    after a failed suite, since the ``with`` block itself ended without an exception).
    """

    def __init__(self, path):
        try:
            t = _target(path)
        except OSError:  # reported at the first write, as for RowsFile; a run that writes nothing touches nothing
            t = None
        self.final = t.path if t is not None and t.how == "replace" and os.path.isfile(t.path) else None
        self.failure: str | None = None
        super().__init__(path if self.final is None else self.final + PARTIAL, "w")

    def fail(self, reason: str = "failed") -> None:
        """Mark the run failed: at the end of the ``with`` block an existing ``path`` is kept, rows stay in .partial."""
        self.failure = reason

    def __exit__(self, exc_type, *exc) -> None:
        self.close()
        if not self.written or self.final is None:
            return
        if exc_type is None and self.failure is None:
            os.chmod(self.path, os.stat(self.final).st_mode & 0o7777)  # the old file's permissions
            os.replace(self.path, self.final)
        else:
            why = exc_type.__name__ if exc_type is not None else self.failure
            print(f"run stopped ({why}): {self.final} kept; the rows it measured are in {self.path}", file=sys.stderr)


def write_rows(path, rows: list[dict]) -> None:
    """Replace ``path`` with ``rows`` as JSON lines, atomically: a temporary file beside it renamed over it, so a run
    killed mid-write leaves the old file or the new one, never half of one. An empty ``rows`` writes nothing (the old
    file stays). A symlink is followed (its target is replaced). A FIFO or character device is written in place, and
    /dev/stdout or /dev/fd/N at that descriptor's offset: ``--out /dev/stdout >> log`` appends to log (it was renamed
    over, losing log's earlier lines). Raises OSError naming the path (a symlink loop, a missing folder, ...).
    """
    if not rows:
        return
    write_output(_target(path), "".join(json.dumps(r) + "\n" for r in rows))


def _target(path) -> OutputTarget:
    """How ``path`` is written (cli_output.check_output: replace / direct / fd, symlinks resolved as the kernel does);
    OSError with check_output's one-line reason, less its "--output" (the scripts' options are --out, --winners...).
    The temporary file of a replacement is short and fixed-length (``.tritonseek-XXXXXXXX.tmp``), so any name the
    folder accepts works (one built from the target's name failed for names over ~240 bytes; tester 2, s19)."""
    try:
        return check_output(os.fspath(path))
    except OutputPathError as e:
        raise OSError(_reason(e)) from None


def _reason(e: OutputPathError) -> str:
    return str(e).replace("--output ", "")


def _open_rows(path, mode: str):
    """(file object, descriptor or None) for RowsFile: a dup of an inherited descriptor (written at its offset, its
    flags kept; closing the dup leaves it open), a FIFO / device / other process's fd opened in place without
    truncation (appended to when it is a regular file, as write_output does), else ``open(path, mode)``."""
    t = _target(path)
    if t.how == "fd":
        flush_streams_on(t.fd)
        return os.fdopen(os.dup(t.fd), "w", encoding="utf-8"), t.fd
    if t.how == "direct":
        return os.fdopen(open_in_place(t.path), "w", encoding="utf-8"), None
    return open(path, mode, encoding="utf-8"), None


def write_json_kept(path, obj, complete: bool) -> None:
    """Write ``obj`` as JSON to ``path`` (e.g. a sweep's ``--winners``), atomically. A run that did not finish
    (``complete`` False: Ctrl-C, an exception, a failed suite) never replaces an existing regular file: it writes
    ``<path>.partial`` and says so on stderr (session 18: an interrupted sweep wrote partial winners over the old
    file). A finished run, or a path that does not exist yet, gets ``path`` itself. /dev/stdout, a FIFO or a device
    is written in place (as write_rows). Raises OSError naming the path."""
    t = _target(path)
    if not complete and t.how == "replace" and os.path.isfile(t.path):
        print(f"run stopped: {t.path} kept; the winners it found are in {t.path}{PARTIAL}", file=sys.stderr)
        t = OutputTarget(t.path + PARTIAL, "replace")
    write_output(t, json.dumps(obj, indent=1))


def git_commit() -> str:
    """The commit benchmark rows carry: TRITONSEEK_COMMIT if set, else ``git rev-parse --short HEAD`` of the checkout
    holding this ``tritonseek`` package (the code being measured, which PYTHONPATH may point elsewhere than the
    script), else "unknown" (no git, not a checkout)."""
    if os.environ.get("TRITONSEEK_COMMIT"):
        return os.environ["TRITONSEEK_COMMIT"]
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                           cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"


# argparse ``type=`` helpers of the benchmark scripts: a bad value is one line naming the option, exit 2 (session 18:
# --sk -1, --budget-s nan, --ks 0 ran or ended in a traceback). ArgumentTypeError's text follows "argument --x: ".
def _arg_int(text: str, lo: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"{v} must be >= {lo}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _arg_int(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    return _arg_int(text, 0)


def int_at_least(lo: int):
    """A ``type=`` for an integer >= ``lo`` (e.g. a slice's layer count, which needs a dense and a MoE layer)."""
    return lambda text: _arg_int(text, lo)


def _arg_float(text: str, positive: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number {'>' if positive else '>='} 0")
    return v


def positive_float(text: str) -> float:
    """A finite float > 0 (nan, inf, 0 and negatives refused)."""
    return _arg_float(text, True)


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (nan, inf and negatives refused), e.g. a reserve of seconds that may be none."""
    return _arg_float(text, False)


def positive_int_list(text: str) -> tuple[int, ...]:
    """A comma list of integers >= 1, e.g. "1,16,64"."""
    return tuple(positive_int(x.strip()) for x in text.split(","))


def name_list(choices):
    """A ``type=`` for a comma list of names from ``choices``; returns them as a list (order kept)."""
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in names if x not in choices]
        if bad or not names:
            name = bad[0] if bad else text
            raise argparse.ArgumentTypeError(f"unknown name {name!r}; choose from {', '.join(choices)}")
        return names
    return parse


def out_file(text: str) -> str:
    """An output file path whose folder exists and is writable (checked before any work, so a typo does not cost the
    whole run), resolved as ``tritonseek generate --output`` resolves it (cli_output.check_output): a folder, a
    symlink loop, a socket or a closed / read-only /dev/fd/N is refused here; /dev/stdout, a FIFO or a character
    device is accepted and later written in place. An empty text stays "" (the scripts' "no file" default). The file
    name (and a symlink's target's name) must leave room for the ``.partial`` an interrupted run's rows go to
    (StagedRows, write_json_kept): at most NAME_MAX - 8 bytes (247 on most Linux file systems); a longer one was
    accepted, then failed with "File name too long" after the whole run (tester 2, s19)."""
    if text == "":
        return text
    _room_for_partial(os.path.abspath(text))  # the name given (before check_output's plain NAME_MAX refusal)
    try:
        t = check_output(text)
    except OutputPathError as e:  # a symlink loop was accepted, then failed (ELOOP) after the whole run
        raise argparse.ArgumentTypeError(_reason(e)) from None
    if t.how == "replace":  # else written in place: no temporary file or .partial beside it
        _room_for_partial(t.path)  # the name written (a link's target)
    return text


def _room_for_partial(path: str) -> None:
    folder, name = os.path.split(path)
    limit = name_limit(folder)
    size = len(os.fsencode(name))
    if size + len(PARTIAL) > limit:
        raise argparse.ArgumentTypeError(
            f"file name {name[:24]}... is {size} bytes; at most {limit - len(PARTIAL)} (the folder takes {limit}, "
            f"less room for {PARTIAL})")


def require_cuda(script: str) -> None:
    """Exit 2 with the one line "<script>: needs a CUDA GPU (torch sees none)" on stderr unless torch sees a CUDA
    device. The benchmark scripts call it right after parsing their options (``--dry`` runs skip it), before any file
    is written: without it they ended in "AssertionError: Torch not compiled with CUDA enabled" tracebacks, some
    after creating an empty rows file (tester, s19)."""
    import torch

    if not torch.cuda.is_available():
        print(f"{script}: needs a CUDA GPU (torch sees none)", file=sys.stderr)
        raise SystemExit(2)


def out_dir(text: str) -> str:
    """An output folder: an existing one, or a new one whose parent exists (the script creates it once its checks have
    passed); a file, or a missing parent (a typo such as /nonexistent/x), is refused before any work."""
    path = os.path.abspath(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder (this option names an output folder)")
    if not os.path.isdir(path) and not os.path.isdir(os.path.dirname(path)):
        raise argparse.ArgumentTypeError(f"folder {os.path.dirname(path)} does not exist")
    return text


def json_object(spec: dict | None = None, what: str = "config overrides"):
    """A ``type=`` for a JSON object (e.g. launch-config overrides); with ``spec`` (a launcher's config spec, rules as
    in ``tritonseek.kernels._utils.check_config``) its keys and values are checked up front, so an unknown or removed
    key or a value outside its rule is one argparse line, not a traceback after the GPU work started."""
    def parse(text: str) -> dict:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object of {what}")
        if spec is not None:
            try:
                spec_check(spec)(obj)
            except (TypeError, ValueError) as e:
                raise argparse.ArgumentTypeError(f"{text}: {e}") from None
        return obj
    return parse


def json_list(check=None, what: str = "configs"):
    """A ``type=`` for a non-empty JSON list (e.g. launch configs to time); ``check(entry)`` (a launcher's own
    validation, raising TypeError / ValueError) runs on each entry, so a bad one is one argparse line naming its
    position before any GPU work (tester 2, s19: ``--cands-json notjson`` ended in a JSONDecodeError traceback,
    ``[{"STAGGER": 5}]`` reached the launcher after the GPU work started)."""
    def parse(text: str) -> list:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, list) or not obj:
            raise argparse.ArgumentTypeError(f"{text!r} is not a non-empty JSON list of {what}")
        for i, entry in enumerate(obj):
            if check is not None:
                try:
                    check(entry)
                except (TypeError, ValueError) as e:
                    raise argparse.ArgumentTypeError(f"entry {i} ({json.dumps(entry)}): {e}") from None
        return obj
    return parse


def spec_check(spec: dict):
    """A ``check`` for :func:`json_list`: the entry is a dict whose keys and values follow ``spec`` (rules as in
    ``tritonseek.kernels._utils.check_config``)."""
    def check(entry) -> None:
        from tritonseek.kernels._utils import check_config

        check_config("config", entry, spec)
    return check


def index_list(n: int):
    """A ``type=`` for a comma list of indices into a list of ``n`` entries (e.g. built-in candidates)."""
    def parse(text: str) -> list[int]:
        out = []
        for x in text.split(","):
            i = _arg_int(x.strip(), 0)
            if i >= n:
                raise argparse.ArgumentTypeError(f"index {i} is out of range (0..{n - 1})")
            out.append(i)
        return out
    return parse


def int_tuple_list(parts: int, sep: str = ":"):
    """A ``type=`` for a comma list of ``parts`` positive integers joined by ``sep``, e.g. "4096:7168,7168:2048"."""
    def parse(text: str) -> list[tuple[int, ...]]:
        out = []
        for item in text.split(","):
            fields = item.strip().split(sep)
            if len(fields) != parts:
                raise argparse.ArgumentTypeError(f"{item.strip()!r} is not {parts} integers joined by {sep!r}")
            out.append(tuple(positive_int(f.strip()) for f in fields))
        return out
    return parse


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source checkout this package was imported from."""
    d = Path(__file__).resolve().parent.parent / "benchmarks"
    if not (d / "bench_mla.py").is_file():
        raise BenchError(f"benchmarks/ not found next to the package ({d}); run from a source checkout of tritonseek")
    return d


def gpu_slug() -> str:
    import torch

    return torch.cuda.get_device_name().lower().replace("nvidia ", "").replace(" ", "-")


def env_bench_args() -> list[str]:
    """The environment variable ``TRITONSEEK_BENCH_ARGS`` split as a POSIX shell splits words (``shlex.split``), e.g.
    ``--batches 1,8 --contexts 1024 --budget-s 60`` for a short e2e run; [] when unset.
    Raises BenchError naming the variable when it cannot be split (an unbalanced quote, a trailing backslash): was
    shlex's ValueError, a traceback (h2tester s25)."""
    text = os.environ.get("TRITONSEEK_BENCH_ARGS", "")
    try:
        return shlex.split(text)
    except ValueError as e:
        raise BenchError(f"TRITONSEEK_BENCH_ARGS={text!r} cannot be split into arguments as a shell would ({e})") from None


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to the JSON-lines file ``path`` (created if missing), one whole line per write.

    Each row is one ``os.write`` of its full line on an O_APPEND descriptor; a short write (a full disk) is cut back
    to where that line began and raised as OSError, so a half row never lands in the record (a later append would
    glue its first row onto it). Rows written before the failing one stay."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        for row in rows:
            data = (json.dumps(row) + "\n").encode()
            start = os.fstat(fd).st_size
            try:
                n = os.write(fd, data)
            except OSError:
                n = -1
            if n != len(data):
                os.ftruncate(fd, start)
                raise OSError(28, f"could not append a whole row to {path} (wrote {max(n, 0)} of {len(data)} bytes; "
                                  "cut back)")
    finally:
        os.close(fd)


def run_suites(names: list[str], extra_args: list[str] | None = None) -> list[dict]:
    """Run the named suites (all when empty) on the current CUDA GPU; returns their rows.

    Each suite's rows are appended to ``benchmarks/results/<gpu>.jsonl`` as soon as that suite finishes
    (:func:`append_rows`: whole lines only), so a later suite that fails, crashes or is stopped (Ctrl-C) does not cost
    the finished suites their rows; before (stop 25) every row was appended after the last suite. A suite that fails
    adds none of its rows (it may have stopped half-way through its cases).
    extra_args: arguments passed to every suite script; None: :func:`env_bench_args` (``TRITONSEEK_BENCH_ARGS``).
    Raises:
        BenchError: unknown suite, TRITONSEEK_BENCH_ARGS not splittable, no CUDA GPU, no benchmarks/ folder, or a
            script that fails (the message says how many rows the finished suites appended, and where).
    """
    import torch

    if extra_args is None:  # before the GPU check: a typo there is reported on any machine
        extra_args = env_bench_args()
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise BenchError(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    if not torch.cuda.is_available():
        raise BenchError("tritonseek bench needs a CUDA GPU and torch sees none")
    bdir = benchmarks_dir()
    results = bdir / "results" / f"{gpu_slug()}.jsonl"
    rows: list[dict] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bdir.parent), os.environ.get("PYTHONPATH", "")])}

    def kept() -> str:  # where the finished suites' rows went, for a failure's message
        return f"; the {len(rows)} rows of the suites that finished are in {results}" if rows else ""

    try:
        for name in names or list(SUITES):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "rows.jsonl"
                cmd = [sys.executable, str(bdir / SUITES[name]), "--out", str(out), *(extra_args or [])]
                r = subprocess.run(cmd, env=env, cwd=bdir.parent)
                if r.returncode != 0:
                    raise BenchError(f"suite {name} failed (exit {r.returncode}): {' '.join(cmd)}{kept()}")
                new = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] \
                    if out.is_file() else []
            if new:
                try:
                    results.parent.mkdir(exist_ok=True)
                    append_rows(results, new)
                except OSError as e:
                    raise BenchError(f"could not append the rows of suite {name} to {results} ({e.strerror or e})"
                                     f"{kept()}") from None
                rows += new
    except KeyboardInterrupt as e:  # tritonseek.cli's "error: interrupted" line ends with where the rows are
        from tritonseek.cli_interrupt import NOTE

        setattr(e, NOTE, kept())
        raise
    return rows
