"""--prompts-file rows come back in --output with their numbers as written (h2tester s25 F2): json's floats turned
``1e400`` into ``Infinity`` (no JSON: jq, JSON.parse and strict readers refuse the line), ``1.00000000000000001``
into ``1.0`` and ``1E5`` into ``100000.0``. Each field other than the three results must be written back unchanged;
the --tp hand-off of the rows keeps them too."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from tritonseek.cli import app
from tritonseek.cli_prompts import HANDOFF_ENV, dumps_row, hand_to_ranks, handed_rows, read_prompts

NUMBERS = '"big": 1e400, "fine": 1.00000000000000001, "exp": 1E5, "neg": -0.0, "n": [2.50, {"x": 12345678901234567890}]'


def _strict(line: str):
    """json.loads refusing NaN / Infinity, as a strict JSON reader does."""
    def refuse(c):
        raise ValueError(f"not JSON: {c}")

    return json.loads(line, parse_constant=refuse)


def test_numbers_come_back_as_written(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"prompt": "x = ", ' + NUMBERS + '}\n{"prompt": "y", "id": 7}\n', encoding="utf-8")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(dst), "-n", "2"])
    assert r.exit_code == 0, r.output
    lines = dst.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith('{"prompt": "x = ", ' + NUMBERS + ', "output": '), lines[0]
    rows = [_strict(line) for line in lines]  # every line is JSON
    assert rows[1]["id"] == 7 and isinstance(rows[1]["id"], int)
    assert len(rows[0]["token_ids"]) == 2 and rows[0]["finish_reason"] == "length"


def test_dumps_row_is_json_dumps_for_other_values(tmp_path, monkeypatch):
    """Everything but floats is written as json.dumps(ensure_ascii=False) writes it (the results' format); the rows
    handed to --tp ranks keep their numbers."""
    row = {"prompt": "é\u2028\"x\"\n", "k": [1, True, None, {}, [], "ü"], "t": {"a": {"b": [-3]}}}
    assert dumps_row(row) == json.dumps(row, ensure_ascii=False)
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "p", ' + NUMBERS + "}\n", encoding="utf-8")
    rows, lines = read_prompts(src)
    assert dumps_row(rows[0]) == '{"prompt": "p", ' + NUMBERS + "}"
    path = hand_to_ranks(rows, lines)
    try:
        monkeypatch.setenv(HANDOFF_ENV, path)
        monkeypatch.setenv("WORLD_SIZE", "2")
        got_rows, got_lines = handed_rows()
        assert got_lines == [1] and [dumps_row(r) for r in got_rows] == [dumps_row(rows[0])]
    finally:
        os.unlink(path)


def test_deeply_nested_rows_round_trip(tmp_path):
    """A row nested 900 deep (json reads and writes it) comes back as it was: dumps_row uses json's encoder, a
    recursive one of its own ran out of Python frames at about half that depth."""
    src = tmp_path / "in.jsonl"
    deep = "[" * 900 + "1.50" + "]" * 900
    src.write_text('{"prompt": "p", "x": ' + deep + "}\n", encoding="utf-8")
    rows, _ = read_prompts(src)
    assert dumps_row(rows[0]) == '{"prompt": "p", "x": ' + deep + "}"
