"""``generate --output`` paths that are not a plain regular file (session 19 tester findings, fixA).

A regular file is replaced through a temporary file and a rename (tests/cli/test_output_file.py); anything else must
be written in place or refused before generating: a rename over ``/dev/stdout``'s target replaced a shell-redirected
log (``-o /dev/stdout >> log.txt`` lost its old lines), a FIFO or a device was refused, a symlink loop was replaced
by a regular file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonseek.cli import app

runner = CliRunner()
ROOT = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed


def _generate(tmp_path, out):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "x = 1"}\n')
    return runner.invoke(app, ["generate", "--prompts-file", str(src), "--output", str(out), "-n", "2"],
                         catch_exceptions=False)


def _refused(r, needle):
    assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.output, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "new tokens" not in r.stderr  # nothing was generated


def _row(text: str) -> dict:
    (line,) = text.splitlines()
    row = json.loads(line)
    assert row["prompt"] == "x = 1" and row["finish_reason"] in ("stop", "length")
    return row


@pytest.mark.parametrize("via", ["/dev/fd/{}", "/proc/self/fd/{}"])
def test_an_open_descriptor_is_written_at_its_offset(tmp_path, via):
    """A log opened for appending (what ``>> log`` gives the process) keeps its lines and gets the row after them;
    the file is the same file afterwards (no rename)."""
    log = tmp_path / "log.txt"
    log.write_text("old 1\nold 2\n")
    inode = log.stat().st_ino
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        r = _generate(tmp_path, via.format(fd))
    finally:
        os.close(fd)
    assert r.exit_code == 0, r.output
    text = log.read_text()
    assert text.startswith("old 1\nold 2\n") and log.stat().st_ino == inode
    _row(text[len("old 1\nold 2\n"):])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "log.txt"]


def test_tp_refuses_a_descriptor_its_ranks_do_not_inherit(tmp_path, monkeypatch):
    """``--tp 2 -o /dev/fd/5 5>out``: torchrun starts the ranks without descriptor 5, so every rank failed after
    loading the model (session 19 tester 2); refused before torchrun starts, the file untouched."""
    import subprocess as sp

    monkeypatch.setattr(sp, "Popen", lambda *a, **k: pytest.fail("torchrun was started"))
    log = tmp_path / "tp5.jsonl"
    log.write_text("old\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        assert fd > 2
        src = tmp_path / "in.jsonl"
        src.write_text('{"prompt": "x = 1"}\n')
        r = runner.invoke(app, ["generate", "--prompts-file", str(src), "--output", f"/dev/fd/{fd}", "-n", "2",
                                "--tp", "2", "--device", "cpu"], catch_exceptions=False)
    finally:
        os.close(fd)
    _refused(r, f"do not inherit file descriptor {fd}")
    assert log.read_text() == "old\n"


def test_a_pipe_descriptor_gets_the_rows(tmp_path):
    rd, wr = os.pipe()
    try:
        r = _generate(tmp_path, f"/dev/fd/{wr}")
        os.close(wr)
        wr = None
        assert r.exit_code == 0, r.output
        with os.fdopen(rd, encoding="utf-8") as f:
            rd = None
            _row(f.read())
    finally:
        for fd in (rd, wr):
            if fd is not None:
                os.close(fd)


def test_dev_stdout_appended_to_a_shell_redirect(tmp_path):
    """The tester's command, for real: ``-o /dev/stdout >> log.txt`` in a shell."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "x = 1"}\n')
    log = tmp_path / "log.txt"
    log.write_text("old\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    cmd = f'"{sys.executable}" -m tritonseek.cli generate --prompts-file in.jsonl -n 2 -o /dev/stdout >> log.txt'
    r = subprocess.run(["sh", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert text.startswith("old\n"), text
    _row(text[len("old\n"):])


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo"])
def test_a_fifo_is_written_in_place(tmp_path, kind):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = fifo if kind == "fifo" else tmp_path / "o.jsonl"
    if kind != "fifo":
        out.symlink_to(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    r = _generate(tmp_path, out)
    reader.join(30)
    assert r.exit_code == 0, r.output
    _row(got[0])
    assert fifo.is_fifo() and (kind == "fifo" or out.is_symlink())


def test_a_character_device_is_written_in_place(tmp_path):
    r = _generate(tmp_path, "/dev/null")
    assert r.exit_code == 0, r.output
    assert Path("/dev/null").is_char_device()


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
        _refused(_generate(tmp_path, path), "is a socket")
    finally:
        s.close()


def test_a_closed_or_read_only_descriptor_is_refused(tmp_path):
    rd, wr = os.pipe()
    os.close(wr)
    try:
        _refused(_generate(tmp_path, f"/dev/fd/{rd}"), f"file descriptor {rd} is not open for writing")
        _refused(_generate(tmp_path, f"/dev/fd/{wr}"), f"file descriptor {wr} is not open")
    finally:
        os.close(rd)


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    _refused(_generate(tmp_path, tmp_path / "loop1"), "is a symlink loop")
    assert (tmp_path / "loop1").is_symlink() and (tmp_path / "loop2").is_symlink()
    (tmp_path / "d").symlink_to("d")  # a loop in a folder of the path
    _refused(_generate(tmp_path, tmp_path / "d" / "o.jsonl"), "--output")


@pytest.mark.parametrize("relative", [True, False])
def test_dot_dot_after_a_symlink_goes_up_from_its_target(tmp_path, monkeypatch, relative):
    """``sl/../out.jsonl`` with ``sl`` a link to ``d/sub``: the OS (and a shell's ``>``) writes ``d/out.jsonl``; the
    path was folded to ``./out.jsonl`` before the link was followed (session 19 tester 2)."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "sl").symlink_to("d/sub")
    monkeypatch.chdir(tmp_path)
    r = _generate(tmp_path, "sl/../out.jsonl" if relative else str(tmp_path / "sl" / ".." / "out.jsonl"))
    assert r.exit_code == 0, r.output
    _row((tmp_path / "d" / "out.jsonl").read_text())
    assert not (tmp_path / "out.jsonl").exists()


def test_a_long_legal_name_works_and_a_too_long_one_is_refused(tmp_path):
    """244 characters is legal (the old temporary name ``.{name}.XXXXXXXX.tmp`` went past 255 after the whole
    run); 256 is refused before generating, as is a too-long folder name (was an OSError traceback)."""
    ok = tmp_path / ("a" * 244)
    r = _generate(tmp_path, ok)
    assert r.exit_code == 0, r.output
    _row(ok.read_text())
    _refused(_generate(tmp_path, tmp_path / ("b" * 256)), "file name is 256 bytes long")
    _refused(_generate(tmp_path, tmp_path / ("c" * 256) / "o.jsonl"), "--output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a" * 244, "in.jsonl"]


@pytest.mark.parametrize("text", ["results/", "out.jsonl/", "out.jsonl/.", ".", "sub/.."])
def test_a_folder_path_is_refused(tmp_path, text, monkeypatch):
    """A trailing slash means a folder: ``results/`` (missing) created a regular file ``results``, ``out.jsonl/``
    (a file) wrote to out.jsonl."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "out.jsonl").write_text("mine\n")
    _refused(_generate(tmp_path, text), "--output must be a file path")
    assert not (tmp_path / "results").exists() and (tmp_path / "out.jsonl").read_text() == "mine\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to hand a file to another user")
def test_replacing_keeps_owner_and_group_as_root(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("old\n")
    os.chown(out, 65534, 65534)
    os.chmod(out, 0o664)
    r = _generate(tmp_path, out)
    assert r.exit_code == 0, r.output
    st = out.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o664)
    _row(out.read_text())


def test_another_processes_descriptor_is_appended_to(tmp_path):
    """``/proc/<pid>/fd/1`` of another process whose stdout is a log: written in place, after the log's lines (a
    truncating open would cut them, a rename would replace the log)."""
    log = tmp_path / "log.txt"
    log.write_text("old\n")
    with open(log, "a") as f:
        p = subprocess.Popen(["sleep", "60"], stdout=f)
    try:
        r = _generate(tmp_path, f"/proc/{p.pid}/fd/1")
    finally:
        p.kill()
        p.wait()
    assert r.exit_code == 0, r.output
    text = log.read_text()
    assert text.startswith("old\n"), text
    _row(text[len("old\n"):])


@pytest.mark.parametrize("new", [False, True])
def test_a_read_only_folder_is_named_as_the_reason(tmp_path, monkeypatch, new):
    """tester23 #2: a writable file in a read-only folder was refused as "--output DIR/f.jsonl is not writable"; what
    cannot be written is the folder (the temporary file of the atomic replace goes there). A read-only file in a
    writable folder keeps its message. (os.access is patched: as root every path is writable.)"""
    from tritonseek.cli_output import OutputPathError, check_output

    folder, out = tmp_path / "ro", tmp_path / "ro" / "f.jsonl"
    folder.mkdir()
    if not new:
        out.write_text("kept\n")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(folder) else real(p, m))
    with pytest.raises(OutputPathError, match=rf"^--output {out}: its folder {folder} is not writable \(the file is "):
        check_output(str(out))
    _refused(_generate(tmp_path, out), f"its folder {folder} is not writable")
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(out) else real(p, m))
    if new:  # a file that does not exist yet: only the folder counts
        assert check_output(str(out)).path == str(out)
    else:
        with pytest.raises(OutputPathError, match=rf"^--output {out} is not writable$"):
            check_output(str(out))
        assert out.read_text() == "kept\n"
