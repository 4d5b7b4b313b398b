"""Long output file names (tester 2, s19): ``benchrun.out_file`` accepted a 250- or 256-byte name, then write_rows
(temporary ``.{name}.XXXXXXXX.tmp``), StagedRows and write_json_kept (``{name}.partial``) failed with "File name too
long" after the whole run. Now out_file refuses, up front, a name without room for ``.partial``, and the temporary
names are short, so every name it accepts can be written by every writer.
"""

from __future__ import annotations

import argparse
import json
import os

import pytest

from tritonseek.benchrun import PARTIAL, StagedRows, out_file, write_json_kept, write_rows
from tritonseek.cli_output import name_limit


def _longest(tmp_path) -> int:
    return name_limit(str(tmp_path)) - len(PARTIAL)


@pytest.mark.parametrize("extra", [1, 3, len(PARTIAL) + 1])  # 248, 250 (the tester's), 256 bytes on ext4 / tmpfs
def test_out_file_refuses_names_without_room_for_partial(tmp_path, extra):
    path = tmp_path / ("r" * (_longest(tmp_path) + extra - 6) + ".jsonl")
    with pytest.raises(argparse.ArgumentTypeError, match="bytes; at most"):
        out_file(str(path))


def test_out_file_refuses_a_link_to_a_long_name(tmp_path):
    target = tmp_path / ("t" * (_longest(tmp_path) + 1))
    target.write_text("")
    (tmp_path / "short.jsonl").symlink_to(target)
    with pytest.raises(argparse.ArgumentTypeError, match="bytes; at most"):
        out_file(str(tmp_path / "short.jsonl"))


def test_the_longest_accepted_name_is_written_by_every_writer(tmp_path, capsys):
    path = tmp_path / ("r" * (_longest(tmp_path) - 6) + ".jsonl")
    assert out_file(str(path)) == str(path)
    rows = [{"a": 1}, {"b": 2}]
    write_rows(path, rows)  # fresh file, then a replacement: both through the temporary file
    write_rows(path, rows[:1])
    assert path.read_text() == json.dumps(rows[0]) + "\n"
    with pytest.raises(RuntimeError):
        with StagedRows(str(path)) as f:  # an interrupted run keeps the file and leaves its rows in .partial
            f.write("new\n")
            raise RuntimeError("stopped")
    assert path.read_text() == json.dumps(rows[0]) + "\n"
    assert (tmp_path / (path.name + PARTIAL)).read_text() == "new\n"
    with StagedRows(str(path)) as f:  # a finished one replaces it
        f.write("done\n")
    assert path.read_text() == "done\n"
    write_json_kept(str(path), {"w": 1}, complete=False)
    assert json.loads((tmp_path / (path.name + PARTIAL)).read_text()) == {"w": 1}
    write_json_kept(str(path), {"w": 2}, complete=True)
    assert json.loads(path.read_text()) == {"w": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + PARTIAL])  # no temp left
    assert os.stat(path).st_size > 0
    capsys.readouterr()
