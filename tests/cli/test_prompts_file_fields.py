"""--prompts-file rows that already hold the results' fields (tester21 #11): their values were replaced in --output
without a word. The run still succeeds (a previous run's results fed back in is a supported round trip) but says
so, naming the line and the field; the test fails without the note."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tritonseek.cli import app


def test_rows_with_result_fields_get_a_note(tmp_path):
    src, dst = tmp_path / "clash.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"prompt": "y = 2"}) + "\n" + json.dumps(
        {"prompt": "x", "output": "my reference answer", "token_ids": [1, 2], "finish_reason": "gold"}) + "\n",
        encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(dst), "-n", "2"])
    assert r.exit_code == 0, r.output
    note = " ".join(r.stderr.split())
    assert (f"note: --prompts-file {src} line 2 already has fields 'output', 'token_ids', 'finish_reason';"
            in note), r.stderr
    assert "--output replaces the values of output, token_ids, finish_reason" in note
    rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert rows[1]["finish_reason"] in ("stop", "length") and len(rows[1]["token_ids"]) <= 2
    src.write_text(json.dumps({"prompt": "y = 2", "id": 3}) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(dst), "-n", "2"])
    assert r.exit_code == 0 and "already has a field" not in r.stderr


def test_dash_means_the_standard_streams(tmp_path):
    """--output - wrote a regular file named "-" and --prompts-file - said "does not exist" (tester21 #9): '-' is
    standard output / input, as in most command-line tools."""
    import os
    import subprocess
    import sys

    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])  # this checkout's tritonseek, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    rows = json.dumps({"prompt": "x = 1", "id": 7}) + "\n"
    r = subprocess.run([sys.executable, "-m", "tritonseek.cli", "generate", "--prompts-file", "-", "-o", "-", "-n", "2"],
                       input=rows, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["id"] == 7 and len(row["token_ids"]) <= 2
    assert not (tmp_path / "-").exists()


def test_help_says_what_an_interrupt_does_to_output():
    """An interrupted --prompts-file run keeps an existing --output; --help did not say so (tester21 #14). Since s25
    (ce386cc) the finished batches' rows go to OUT.partial, and --help says that too."""
    r = CliRunner().invoke(app, ["generate", "--help"], terminal_width=200)
    text = " ".join(r.stdout.split())
    assert r.exit_code == 0, text
    assert "leaves an --output file as it was" in text and "OUT.partial" in text, text


def test_rows_with_sampling_fields_get_a_note(tmp_path):
    """tester23 #11: a row's own max_new_tokens / temperature were ignored without a word and echoed back beside
    results made with the command line's values. The run still uses the command line's, and says so."""
    src, dst = tmp_path / "r.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"prompt": "y = 2"}) + "\n" + json.dumps(
        {"prompt": "def f():", "max_new_tokens": 2, "temperature": 0.9}) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(dst), "-n", "5"])
    assert r.exit_code == 0, r.output
    note = " ".join(r.stderr.split())
    assert (f"note: --prompts-file {src} line 2 has fields 'temperature', 'max_new_tokens'; per-row sampling "
            "settings are not read: the command-line options" in note), r.stderr
    src.write_text(json.dumps({"prompt": "y = 2", "id": 3}) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(dst), "-n", "2"])
    assert r.exit_code == 0 and "per-row sampling settings" not in r.stderr
