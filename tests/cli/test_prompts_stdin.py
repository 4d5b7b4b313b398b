"""--prompts-file - (standard input) beyond the plain pipe (tester22 s21): under --tp, and at a terminal.

Each test fails without its fix: the --tp ranks re-opened /dev/stdin the parent had read to its end ("holds no
prompts", rc 2, printed once per rank), and a terminal on both stdin and stdout was refused as "--output must not
overwrite --prompts-file".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonseek.cli_prompts import HANDOFF_ENV, PromptsFileError, hand_to_ranks, handed_rows

ROOT = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", HANDOFF_ENV)}
    return {**env, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), **extra}


def test_tp_ranks_get_the_rows_read_from_stdin(tmp_path):
    """The parent reads the pipe once and hands its rows to the torchrun ranks; the notes are printed once (they
    were printed by the parent and again by every rank) and name '-' as given, not /dev/stdin."""
    rows = json.dumps({"prompt": "def f(x):", "id": 7, "output": "gold"}) + "\n" + json.dumps("x = 1") + "\n"
    r = subprocess.run([sys.executable, "-m", "tritonseek.cli", "generate", "--prompts-file", "-", "-o", "-", "-n", "3",
                        "--seed", "1", "--tp", "2", "--device", "cpu"], input=rows, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["prompt"] for o in out] == ["def f(x):", "x = 1"] and out[0]["id"] == 7 and out[0]["output"] != "gold"
    assert all(1 <= len(o["token_ids"]) <= 3 for o in out)
    err = " ".join(r.stderr.split())
    assert err.count("already has a field 'output'") == 1 and "--prompts-file - (standard input) line 1" in err, err
    assert err.count("apply only when sampling") == 1 and err.count("prompt tokens") == 1, err
    assert not [f for f in os.listdir(tmp_path)]


def test_handoff_file_round_trip_and_cleanup_contract(tmp_path, monkeypatch):
    rows, lines = [{"prompt": "é\u2028x", "k": [1]}], [3]
    path = hand_to_ranks(rows, lines)
    try:
        assert os.stat(path).st_mode & 0o077 == 0  # the prompts are private to this user
        monkeypatch.setenv(HANDOFF_ENV, path)
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        assert handed_rows() is None  # one process: never the handed rows
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert handed_rows() == (rows, lines)
    finally:
        os.unlink(path)
    with pytest.raises(PromptsFileError, match="handed over by the --tp parent"):
        handed_rows()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_stdin_and_stdout_on_one_terminal(tmp_path):
    """`--prompts-file - -o -` typed at a terminal: stdin and stdout are the same tty, which is no file to overwrite."""
    import select
    import time

    master, slave = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "tritonseek.cli", "generate", "--prompts-file", "-", "-o", "-",
                              "-n", "2"], stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=tmp_path, env=_env())
        os.write(master, b'{"prompt": "x = 1", "id": 5}\n')
        time.sleep(0.2)
        os.write(master, b"\x04")  # Ctrl-D: end of input
        _, err = p.communicate(timeout=300)
        seen = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0, err.decode()[-2000:]
    assert b'"id": 5' in seen and b'"token_ids"' in seen, seen


def _cli(args, tmp_path, **kw):
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.run([sys.executable, "-m", "tritonseek.cli", "generate", *args], text=True, timeout=300,
                          cwd=tmp_path, env=_env(), **kw)


def test_dot_slash_dash_is_a_file_and_empty_is_refused(tmp_path, monkeypatch):
    """Only the text "-" is standard input: a Path option printed ./- as "-", so --prompts-file ./- read stdin
    (tester22 #2). An empty --prompts-file was the current folder ("--prompts-file . is a folder")."""
    from typer.testing import CliRunner

    from tritonseek.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text(json.dumps({"prompt": "x = 1", "id": 9}) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", "./-", "-o", "o.jsonl", "-n", "2"],
                           input=json.dumps({"prompt": "from stdin", "id": 1}) + "\n")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o.jsonl").read_text(encoding="utf-8"))["id"] == 9
    r = CliRunner().invoke(app, ["generate", "--prompts-file", "", "-o", "o.jsonl", "-n", "2"])
    assert r.exit_code == 2 and "--prompts-file is empty" in r.stderr, r.output


def test_dash_messages_name_the_stream_not_dev_paths(tmp_path):
    """With '-' the messages named /dev/stdin and /dev/stdout, which the user never typed, and a closed stdin was
    "does not exist" (tester22 #3); the result-field note counted fields as rows, named one of them, and said the
    piped input "keeps the old ones" (#4a, #4b)."""
    from typer.testing import CliRunner

    from tritonseek.cli import app

    row = json.dumps({"prompt": "x", "output": "gold", "token_ids": [1, 2]}) + "\n"
    r = CliRunner().invoke(app, ["generate", "--prompts-file", "-", "-o", str(tmp_path / "o.jsonl"), "-n", "2"],
                           input=row)
    note = " ".join(r.stderr.split())
    assert r.exit_code == 0, r.output
    assert "--prompts-file - (standard input) line 1 already has fields 'output', 'token_ids';" in note, note
    assert "rows in all" not in note and "keeps the old ones" not in note
    src = tmp_path / "p.jsonl"
    src.write_text(row * 2, encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(tmp_path / "o.jsonl"), "-n", "2"])
    note = " ".join(r.stderr.split())
    assert "(2 rows in all)" in note and "(the prompts file keeps the old ones)" in note, note
    r = _cli(["--prompts-file", "-", "-o", "-", "-n", "2"], tmp_path, preexec_fn=lambda: os.close(0))
    assert r.returncode == 2 and "error: --prompts-file - (standard input): standard input is closed" in r.stderr, \
        r.stderr
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n", encoding="utf-8")
    r = _cli(["--prompts-file", "p.jsonl", "-o", "-", "-n", "2"], tmp_path, preexec_fn=lambda: os.close(1))
    assert r.returncode == 2 and "error: --output - (standard output): standard output is closed" in r.stderr, \
        r.stderr


def test_output_dash_to_a_reader_that_went_away_is_quiet(tmp_path):
    """`-o - | head -1`: the reader leaves, the rows' write fails with EPIPE. That ended in "error: could not write
    --output /dev/stdout (Broken pipe)" while the streamed text ends quietly (tester22 #4c); still exit 1."""
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n", encoding="utf-8")
    rd, wr = os.pipe()
    os.close(rd)  # no reader at all by the time the rows are written
    try:
        r = _cli(["--prompts-file", "p.jsonl", "-o", "-", "-n", "2"], tmp_path, stdout=wr)
    finally:
        os.close(wr)
    assert r.returncode == 1 and "error" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_dash_reads_descriptor_0_from_where_it_stands(tmp_path):
    """'-' reads standard input as it is (tester22 #12): re-opening /dev/stdin of a regular file started again at
    offset 0 (`{ read -r header; tritonseek generate --prompts-file - ...; } < p.jsonl` generated the header line
    too), and a socket on stdin was "not a file, a FIFO or a character device"."""
    import socket

    src = tmp_path / "two.jsonl"
    src.write_text(json.dumps({"prompt": "header"}) + "\n" + json.dumps({"prompt": "x", "id": 2}) + "\n",
                   encoding="utf-8")
    fd = os.open(src, os.O_RDONLY)
    try:
        os.lseek(fd, len(json.dumps({"prompt": "header"})) + 1, os.SEEK_SET)  # the caller consumed the header
        r = _cli(["--prompts-file", "-", "-o", "-", "-n", "2"], tmp_path, stdin=fd)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [2]
    a, b = socket.socketpair()
    with a, b:
        a.sendall(json.dumps({"prompt": "x", "id": 3}).encode() + b"\n")
        a.shutdown(socket.SHUT_WR)
        r = _cli(["--prompts-file", "-", "-o", "-", "-n", "2"], tmp_path, stdin=b)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [3]
