"""Where ``tritonseek generate --output`` writes its JSONL rows, and how; writing streamed text to stdout (used by
tritonseek.cli).

Three ways, chosen before any generation from what the path reaches:

- ``replace``: a regular file, a symlink resolving to one, or a new name in an existing folder. The rows go to a
  temporary file beside the target that is renamed over it, so an error or a kill mid-write leaves the old contents.
- ``direct``: a character device (``/dev/null``, a terminal) or a FIFO, opened and written in place, as a shell's
  ``>`` does (a rename would replace the node instead of writing through it); also any path through another
  process's ``/proc/<pid>/fd/N``, appended to when it is a regular file.
- ``fd``: a path through this process's ``/proc/self/fd/N`` or ``/dev/fd/N`` (``/dev/stdout`` is one): the bytes are
  written to the open descriptor N, at its offset and with its flags (``>> log`` appends). Renaming over the file
  behind it replaced a shell-redirected log (session 19 tester: ``-o /dev/stdout >> log.txt`` lost log.txt's old
  lines; with a pipe behind it the whole run was spent and then failed).
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass


PARTIAL = ".partial"  # added to a kept file's name for the rows of a run that stopped early (generate, benchrun)


class OutputPathError(ValueError):
    """--output cannot be written; the message is one line for the user, naming --output."""


@dataclass(frozen=True)
class OutputTarget:
    """What the rows will be written to. ``path``: the final path, every symlink resolved (for ``fd``, the
    ``/proc/<pid>/fd/N`` link); ``how``: ``replace``, ``direct`` or ``fd``; ``fd``: N for ``fd``, else None."""

    path: str
    how: str
    fd: int | None = None


_MAX_LINKS = 40  # Linux's own limit on symlinks followed in one lookup (ELOOP beyond it)
_OWN_FD = re.compile(r"/proc/(\d+)(?:/task/\d+)?/fd/(\d+)")


def name_limit(folder: str) -> int:
    """The longest file name (bytes) ``folder``'s file system takes; 255 (Linux's usual) when it cannot say or the
    folder does not exist."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX") if os.path.isdir(folder) else 255
    except (OSError, ValueError):
        return 255


def _follow(raw: str) -> tuple[str, int | None]:
    """The path ``raw`` reaches (every symlink followed, one at a time) and the descriptor N when the chain goes
    through this process's /proc/<pid>/fd/N. A magic /proc fd link is not followed further: what it names is an
    open file description, not a path to rename over.

    Resolved name by name from the root or the working folder, as the kernel does: a ``..`` goes up from the folder
    reached so far, after the links before it were followed. Folding ``..`` first (abspath/normpath) took
    ``sl/../x``, with ``sl`` a link to ``d/sub``, for ``./x``; the OS (and a shell's ``>``) writes ``d/x``
    (session 19 tester 2)."""
    base = "/" if raw.startswith("/") else os.getcwd()  # always a path without links, . or ..
    todo = [n for n in raw.split("/") if n not in ("", ".")]
    todo.reverse()  # a stack: the next name last
    links = 0
    while todo:
        name = todo.pop()
        if name == "..":
            base = os.path.dirname(base)  # the root's parent is the root
            continue
        p = os.path.join(base, name)
        m = _OWN_FD.fullmatch(p)
        if m and not todo:  # another process's descriptor: written in place through the link (check_output)
            return (p, int(m.group(2))) if int(m.group(1)) == os.getpid() else (p, None)
        if not os.path.islink(p):
            base = p
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OutputPathError(f"--output {raw} is a symlink loop (more than {_MAX_LINKS} links); give a file "
                                  "path")
        target = os.readlink(p)
        if target.startswith("/"):
            base = "/"
        todo.extend(reversed([n for n in target.split("/") if n not in ("", ".")]))
    return base, None


def check_output(raw: str, child: bool = False) -> OutputTarget:
    """Decide how the rows will be written to ``raw`` (the --output text as typed; "-" is descriptor 1, standard
    output, as /dev/stdout is), failing before any work.
    ``child``: another process writes the rows (--tp: torchrun's rank 0), which inherits descriptors 0-2 only.

    Raises:
        OutputPathError: a folder path (trailing ``/``, ``.``, ``..``), a file name longer than the file system
            takes, a symlink loop, a missing or unwritable folder, a socket or block device, a closed or read-only
            descriptor, a descriptor other than 1 and 2 when ``child``, or any other OSError met while looking (its
            message, one line).
    """
    if raw == "-":  # standard output; messages name it as given, not as /dev/stdout (tester22 #3)
        return _check_fd("- (standard output)", f"/proc/{os.getpid()}/fd/1", 1, child)
    if os.path.basename(raw) in ("", ".", ".."):
        # pathlib drops a trailing slash: "results/" created a regular file "results", "out.jsonl/" wrote out.jsonl
        raise OutputPathError(f"--output {raw!r} names a folder; --output must be a file path")
    try:
        path, fd = _follow(raw)
        if fd is not None:
            return _check_fd(raw, path, fd, child)
        folder, name = os.path.split(path)
        limit = name_limit(folder)
        if len(os.fsencode(name)) > limit:
            raise OutputPathError(f"--output file name is {len(os.fsencode(name))} bytes long; this file system "
                                  f"takes at most {limit}")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is None:
            if not os.path.isdir(folder):
                raise OutputPathError(f"--output folder {folder} does not exist")
        elif stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"--output {raw} is a directory; give a file path")
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or path.startswith("/proc/"):
            if not os.access(path, os.W_OK):
                raise OutputPathError(f"--output {raw} is not writable")
            return OutputTarget(path, "direct")
        elif not stat.S_ISREG(st.st_mode):
            kind = "a socket" if stat.S_ISSOCK(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode) else \
                "not a regular file"
            raise OutputPathError(f"--output {raw} is {kind}; give a file path, a FIFO or a character device")
        if not os.access(folder, os.W_OK | os.X_OK):
            # a writable file in a read-only folder was reported as "not writable" itself (tester23 #2)
            raise OutputPathError(f"--output {raw}: its folder {folder} is not writable (the file is replaced "
                                  "atomically through a temporary file there)")
        if st is not None and not os.access(path, os.W_OK):
            raise OutputPathError(f"--output {raw} is not writable")
        return OutputTarget(path, "replace")
    except OSError as e:  # ENAMETOOLONG in a folder name, ELOOP in a folder, EACCES while looking
        raise OutputPathError(f"--output {raw}: {e.strerror or e}") from None


def _check_fd(raw: str, path: str, fd: int, child: bool) -> OutputTarget:
    import fcntl

    if child and fd not in (1, 2):
        # torchrun's ranks are started without it (close_fds): each rank failed after the model was loaded
        raise OutputPathError(f"--output {raw}: --tp ranks run in processes that do not inherit file descriptor "
                              f"{fd}; give a file path (or /dev/stdout)")
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        what = "standard output is closed (file descriptor 1)" if fd == 1 else f"file descriptor {fd} is not open"
        raise OutputPathError(f"--output {raw}: {what}") from None
    if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        raise OutputPathError(f"--output {raw}: file descriptor {fd} is not open for writing")
    return OutputTarget(path, "fd", fd)


def same_file(target: OutputTarget, other: str) -> bool:
    """Whether ``target`` is the regular file ``other`` (so writing it would overwrite that file). A terminal, FIFO
    or other device is never "overwritten": ``--prompts-file - -o -`` at an interactive terminal has standard input
    and output on one tty, which was refused as "--output must not overwrite --prompts-file" (fix2 s21)."""
    try:
        a = os.fstat(target.fd) if target.how == "fd" else os.stat(target.path)
        b = os.stat(other)
    except OSError:
        return False
    return stat.S_ISREG(b.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def write_output(target: OutputTarget, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` as check_output decided. Raises OSError.

    ``replace``: atomic (temporary file ``.tritonseek-XXXXXXXX.tmp`` beside the target, short so that any legal
    target name works, renamed over it; none is left behind on any exit). The replaced file keeps its permission
    bits, and its owner and group where this process may set them (root; else the file becomes the writer's), but
    hard links to it keep the old contents: the name now points to a new file. A symlink stays a link.
    ``direct`` and ``fd``: written in place, not atomic."""
    data = text.encode("utf-8")
    if target.how == "fd":
        flush_streams_on(target.fd)
        _write_all(target.fd, data)
        return
    if target.how == "direct":
        fd = open_in_place(target.path)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        return
    real = target.path
    fd, tmp = tempfile.mkstemp(prefix=".tritonseek-", suffix=".tmp", dir=os.path.dirname(real))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            st = None
        if st is not None:  # before chmod: a chown clears set-id bits
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError:  # not root and not the owner: the file becomes this user's
                pass
        # mkstemp makes 0600: the old file's bits, or what a plain open() would have given a new file
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        os.replace(tmp, real)
        tmp = None
    finally:  # also on Ctrl-C mid-write
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def keep_finished(target: OutputTarget, output: str, lines: list[str]) -> str:
    """Save the rows of the batches a ``--prompts-file`` run finished before it stopped (Ctrl-C, SIGTERM, an error in
    a later batch), which were lost before (h3fix s25). ``target``: check_output's decision for ``output`` (--output
    as typed); ``lines``: the finished rows' JSONL lines, in order.

    A ``replace`` target stays as it was (an existing file keeps its contents: it is not this run's output); the rows
    go to ``<target.path>.partial`` beside it, written as write_output writes (atomically, through check_output's
    rules: a ``.partial`` that is a symlink is followed). A ``direct`` or ``fd`` target (a FIFO, a device, standard
    output) gets the rows in place: a reader there would have had them row by row anyway.

    Returns the clause the run's one-line error ends with ("; --output o.jsonl not written: the 3 finished rows are
    in o.jsonl.partial"), "" for no rows. Never raises for a failed save (OSError, a name too long for ``.partial``):
    the clause then says the rows could not be saved and why."""
    if not lines:
        return ""
    rows = f"the {len(lines)} finished row{'s' if len(lines) != 1 else ''}"
    text = "".join(lines)
    try:
        if target.how != "replace":
            write_output(target, text)
            return f"; {rows} were written to --output {output}"
        path = target.path + PARTIAL
        write_output(check_output(path), text)
        shown = output + PARTIAL if os.path.abspath(output) == target.path else path  # as typed, unless a link
        return f"; --output {output} not written: {rows} are in {shown}"
    except OutputPathError as e:
        return f"; {rows} could not be saved ({str(e).replace('--output ', '', 1)})"
    except OSError as e:
        return f"; {rows} could not be saved ({e.strerror or e})"


def flush_streams_on(fd: int) -> None:
    """Flush sys.stdout / sys.stderr when they write to descriptor ``fd``: what was printed there comes before bytes
    written to ``fd`` directly."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.fileno() == fd:
                stream.flush()
        except (OSError, ValueError, AttributeError, StdoutLost):  # no descriptor (CliRunner, a capture), or closed
            pass


def open_in_place(path: str) -> int:
    """A write-only descriptor on a ``direct`` target (check_output). No O_TRUNC: a FIFO or device ignores it, and a
    regular file reached through another process's /proc/<pid>/fd/N (that process's log, say) gets the rows appended
    rather than its contents cut. Raises OSError."""
    append = os.O_APPEND if stat.S_ISREG(os.stat(path).st_mode) else 0
    return os.open(path, os.O_WRONLY | append)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class StdoutLost(Exception):
    """Writing the streamed text to standard output failed (a full disk, /dev/full, a closed pipe). ``broken_pipe``:
    the reader went away (``| head``): the caller ends quietly, as Python's docs advise for EPIPE (stdout pointed at
    /dev/null, exit 1, no message), since nothing the user asked to keep is lost."""

    def __init__(self, reason: str, broken_pipe: bool = False):
        super().__init__(reason)
        self.broken_pipe = broken_pipe

    @classmethod
    def of(cls, e: OSError) -> "StdoutLost":
        """The StdoutLost for a failed write's OSError: its reason, and whether the reader went away (EPIPE)."""
        return cls(e.strerror or str(e), isinstance(e, BrokenPipeError))


def emit(text: str) -> None:
    """Streamed text to stdout, flushed at once. Raises StdoutLost with the OS's reason, or naming stdout's encoding
    when it cannot hold the text."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except StdoutLost:  # GuardedStdout
        raise
    except OSError as e:
        raise StdoutLost.of(e) from None
    except UnicodeEncodeError as e:  # PYTHONIOENCODING=ascii, a legacy code page: was exit 2 (h2tester s25 F9)
        enc = getattr(sys.stdout, "encoding", None) or "?"
        text = e.object[e.start:e.end]
        raise StdoutLost(f"its encoding {enc} cannot represent {text!r}; set PYTHONIOENCODING=utf-8") from None


def drop_stdout() -> None:
    """After a failed write, point stdout's descriptor at /dev/null: the text still buffered would otherwise fail again
    when Python flushes stdout at exit ("Exception ignored ... OSError", a second message). An in-process stdout
    without a descriptor (CliRunner) is left alone."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class GuardedStdout:
    """Stand-in for ``sys.stdout`` while a command runs as a process (tritonseek.cli._App): a failed write or flush
    raises StdoutLost rather than OSError, so the CLI ends it in one line (exit 1) instead of a traceback
    (``info > /dev/full``, ``--help > /dev/full``), and a closed stdout (``>&-``, ``real`` None) fails the first write
    instead of dropping the text silently (exit 0). Other attributes are the real stream's."""

    def __init__(self, real):
        self.real = real

    def write(self, text: str) -> int:
        if self.real is None:
            raise StdoutLost("it is closed")
        try:
            return self.real.write(text)
        except OSError as e:
            raise StdoutLost.of(e) from None

    def flush(self) -> None:
        if self.real is None:
            return
        try:
            self.real.flush()
        except OSError as e:
            raise StdoutLost.of(e) from None

    def __getattr__(self, name: str):
        if self.real is None:  # what rich and click ask of a stream (isatty, fileno, encoding) has no answer
            raise AttributeError(name)
        return getattr(self.real, name)


def stdout_closed() -> bool:
    """Whether the process started with stdout closed (``>&-``: Python sets sys.stdout to None)."""
    out = sys.stdout
    return out is None or (isinstance(out, GuardedStdout) and out.real is None)


class QuietStderr:
    """File-like stand-in for ``sys.stderr``, looked up at each call (CliRunner and --tp's silent ranks swap it),
    that drops write errors: a closed (``2>&-``) or full stderr must not cost the run its results. Before, the first
    note on stderr raised OSError (EBADF/ENOSPC), so every command ended with exit 1 before generating anything.
    ``write`` returns the length as if written; other attributes are the current stderr's."""

    def write(self, text: str) -> int:
        try:
            if sys.stderr is not None:
                sys.stderr.write(text)
        except (OSError, ValueError):  # closed, full, or a closed file object
            pass
        return len(text)

    def flush(self) -> None:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        try:
            return sys.stderr is not None and sys.stderr.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str):
        return getattr(sys.stderr, name)
