"""benchrun's writers (write_rows, StagedRows, RowsFile, write_json_kept) and out_file resolve --out as
``tritonseek generate --output`` does (cli_output.check_output), s19:
- ``--out /dev/stdout >> log``: realpath() turned /dev/stdout into log itself, a regular file, so the rows were renamed
  over it (log's earlier lines lost) and StagedRows staged them in log.partial. An inherited descriptor is now written
  at its offset, flags kept (the append goes after what is there), and the file keeps its inode.
- a symlink loop passed out_file (realpath does not fail on one) and the run failed with ELOOP at its end; now it is
  refused up front, and the writers raise OSError naming it.
Regular files are still replaced atomically (a new inode)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonseek.benchrun import RowsFile, StagedRows, out_file, write_json_kept, write_rows

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
from tritonseek.benchrun import RowsFile, StagedRows, out_file, write_json_kept, write_rows
assert out_file("/dev/stdout") == "/dev/stdout"
print("progress")  # buffered: must land before the rows
write_rows("/dev/stdout", [{"a": 1}])
with StagedRows("/dev/stdout") as f:
    f.write('{"b": 2}\n')
with RowsFile("/dev/stdout", "w") as f:
    f.write('{"c": 3}\n')
write_json_kept("/dev/stdout", {"w": 1}, complete=False)
print("end")
"""


def test_dev_stdout_appended_to_a_redirected_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("old\n")
    ino = log.stat().st_ino
    with open(log, "a") as f:  # the shell's `>> log.txt`
        r = subprocess.run([sys.executable, "-c", _CHILD], stdout=f, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert log.read_text() == 'old\nprogress\n{"a": 1}\n{"b": 2}\n{"c": 3}\n{\n "w": 1\n}end\n'
    assert log.stat().st_ino == ino and sorted(p.name for p in tmp_path.iterdir()) == ["log.txt"]  # no .partial/tmp


def test_inherited_descriptor_written_at_its_offset(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("kept\n")
    ino = log.stat().st_ino
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        path = f"/dev/fd/{fd}"
        assert out_file(path) == path
        write_rows(path, [{"x": 1}])
        with StagedRows(path) as f:
            f.write("staged\n")
        write_json_kept(path, [1], complete=True)
        os.fstat(fd)  # the writers closed their dups only
    finally:
        os.close(fd)
    assert log.read_text() == 'kept\n{"x": 1}\nstaged\n[\n 1\n]' and log.stat().st_ino == ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt"]


def test_closed_descriptor_refused_up_front():
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)  # a number that is certainly not open now
    with pytest.raises(argparse.ArgumentTypeError, match=f"file descriptor {fd} is not open"):
        out_file(f"/dev/fd/{fd}")


def test_symlink_loop_refused_by_out_file_and_the_writers(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(argparse.ArgumentTypeError, match="symlink loop"):
        out_file(str(a))
    with pytest.raises(OSError, match="symlink loop"):
        write_rows(a, [{"x": 1}])
    with pytest.raises(OSError, match="symlink loop"):
        write_json_kept(str(a), {}, complete=True)
    with pytest.raises(OSError, match="symlink loop"):
        with RowsFile(str(a)) as f:
            f.write("x\n")
    with pytest.raises(OSError, match="symlink loop"):
        with StagedRows(str(a)) as f:
            f.write("x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"] and a.is_symlink()


def test_regular_file_still_replaced_atomically_through_a_link(tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_text("old\n")
    os.chmod(out, 0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    ino = out.stat().st_ino
    assert out_file(str(link)) == str(link)
    write_rows(link, [{"r": 1}])
    assert out.stat().st_ino != ino and out.read_text() == '{"r": 1}\n' and link.is_symlink()
    assert out.stat().st_mode & 0o777 == 0o640
    with StagedRows(str(link)) as f:
        f.write("new\n")
        assert (tmp_path / "rows.jsonl.partial").read_text() == "new\n" and out.read_text() == '{"r": 1}\n'
    assert out.read_text() == "new\n" and link.is_symlink()
    write_json_kept(str(link), {"w": 1}, complete=False)
    assert json.loads((tmp_path / "rows.jsonl.partial").read_text()) == {"w": 1} and out.read_text() == "new\n"
