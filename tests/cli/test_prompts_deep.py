"""A --prompts-file row nested deeper than json can read (h2tester s25 F8) ended in a RecursionError traceback
("maximum recursion depth exceeded while decoding a JSON array"), exit 1; it is an input error like any other line
that cannot be read: one line naming the file and the line, exit 2, nothing generated."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tritonseek.cli import app
from tritonseek.cli_prompts import PromptsFileError, read_prompts


def _deep(n: int) -> str:
    return '{"prompt": "a", "x": ' + "[" * n + "]" * n + "}\n"


def test_too_deep_row_is_a_prompts_file_error(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "ok"}\n' + _deep(100_000), encoding="utf-8")
    with pytest.raises(PromptsFileError, match=r"line 2 is nested too deeply"):
        read_prompts(src)
    dst = tmp_path / "out.jsonl"
    dst.write_text("keep\n")
    r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(dst), "-n", "2"])
    assert r.exit_code == 2 and "line 2 is nested too deeply" in r.stderr, r.output
    assert "Traceback" not in r.output and dst.read_text() == "keep\n"
