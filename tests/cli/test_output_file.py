"""``tritonseek generate --prompts-file IN --output OUT``: how OUT is written (session 19, h5fix). The rows replace
OUT atomically (a temporary file beside the target renamed over it: an error leaves the old contents), a symlink is
followed (its target gets the rows, the link stays), and an existing file keeps its permission bits. Session 18's
code refused a symlink up front and reset an existing 0640 file to the umask's default (0644)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from tritonseek.cli import app

runner = CliRunner()


def _generate(tmp_path, out):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "x = 1"}\n')
    return runner.invoke(app, ["generate", "--prompts-file", str(src), "--output", str(out), "-n", "2"],
                         catch_exceptions=False)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _rows(p) -> list[dict]:
    return [json.loads(x) for x in open(p, encoding="utf-8").read().splitlines()]


def test_output_symlink_is_followed_and_kept(tmp_path):
    """The link stays a link; its target (in another folder, mode 0640) gets the rows and keeps its mode; the
    temporary file was made beside the target, and none is left in either folder."""
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "results.jsonl"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "o.jsonl"
    link.symlink_to(target)
    r = _generate(tmp_path, link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    (row,) = _rows(target)
    assert row["prompt"] == "x = 1" and row["finish_reason"] in ("stop", "length")
    assert _mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "in.jsonl", "o.jsonl"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["results.jsonl"]


def test_output_dangling_symlink_creates_its_target(tmp_path):
    """As a shell's ``>`` does: the link's target is created (with the umask's mode), the link stays."""
    target = tmp_path / "new.jsonl"
    link = tmp_path / "o.jsonl"
    link.symlink_to(target)
    r = _generate(tmp_path, link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and len(_rows(target)) == 1
    mask = os.umask(0)
    os.umask(mask)
    assert _mode(target) == 0o666 & ~mask


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_output_keeps_an_existing_files_mode(tmp_path, mode):
    out = tmp_path / "o.jsonl"
    out.write_text("old\n")
    os.chmod(out, mode)
    r = _generate(tmp_path, out)
    assert r.exit_code == 0, r.output
    assert len(_rows(out)) == 1 and _mode(out) == mode


def test_output_write_error_keeps_the_old_contents(tmp_path, monkeypatch):
    """The rename fails (e.g. the disk filled): the link's target keeps its old contents and mode, the rows go to
    stdout, one error line, no temporary file left."""
    target = tmp_path / "results.jsonl"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "o.jsonl"
    link.symlink_to(target)

    def replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    r = _generate(tmp_path, link)
    assert r.exit_code == 1 and "could not write --output" in r.stderr and "Traceback" not in r.output
    assert json.loads(r.stdout.splitlines()[0])["prompt"] == "x = 1"
    assert target.read_text() == "old\n" and _mode(target) == 0o640 and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "o.jsonl", "results.jsonl"]


def test_output_symlink_into_a_missing_folder_fails_before_generating(tmp_path):
    link = tmp_path / "o.jsonl"
    link.symlink_to(tmp_path / "nodir" / "x.jsonl")
    r = _generate(tmp_path, link)
    assert r.exit_code != 0 and "does not exist" in r.stderr and "Traceback" not in r.output
    assert "new tokens" not in r.stderr
