"""A --prompts-file run stopped in a later batch (Ctrl-C, SIGTERM, an error) lost every batch already finished: the
docstring said "no rows are written, not even those of prompts already finished" (h2tester s25, design question).
Now --output stays as it was and the finished rows go to OUT.partial (cli_output.keep_finished, written by
write_output), and the one-line error says where and how many (h3fix s25)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from typer.testing import CliRunner

from tritonseek import cli_prompts
from tritonseek.cli import app
from tritonseek.cli_output import check_output, keep_finished, name_limit
from tritonseek.engine.llm import LLM

runner = CliRunner()
PROMPTS = ["def add(a, b):", "import os", "x = [1, 2", "class A:"]


@pytest.fixture
def handlers_kept():
    """The test's SIGINT / SIGTERM / SIGHUP handlers, put back whatever the code under test left. A SIGHUP ignored
    by inheritance (pytest started under nohup) is set to the default for the test: the CLI keeps an inherited SIG_IGN
    on purpose (cli_interrupt.TerminationGuard), so the SIGHUP case would otherwise test nohup, not the guard."""
    outer = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    if outer[signal.SIGHUP] == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    before = {s: signal.getsignal(s) for s in outer}
    yield before
    for s, h in outer.items():
        signal.signal(s, h)


def _stop(how):
    if how == "error":
        raise ValueError("the batch failed")
    if how == "crash":
        raise RuntimeError("CUDA out of memory (simulated)")
    os.kill(os.getpid(), getattr(signal, how))
    time.sleep(5)  # the handler runs at the next bytecode boundary; 5 s only if it never does
    raise AssertionError(f"{how} did not stop the run")


def _run(tmp_path, monkeypatch, how, stop_at=2):
    """A 4-row file in batches of about 2 rows; the generate call number ``stop_at`` stops as ``how`` says. Returns
    (result, --output path, the rows the finished calls returned as the CLI writes them)."""
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "id": i})[:-1] + ', "w": 1e400}\n' for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out.jsonl"
    out.write_text("old results\n")
    real, done, calls = LLM.generate, [], []

    def generate(self, prompts, *a, **k):
        calls.append(len(prompts))
        if len(calls) == stop_at:
            _stop(how)
        res = real(self, prompts, *a, **k)
        done.extend(res)
        return res

    monkeypatch.setattr(cli_prompts, "BATCH_TOKENS", 25)
    monkeypatch.setattr(LLM, "generate", generate)
    r = runner.invoke(app, ["generate", "--prompts-file", str(src), "-o", str(out), "-n", "3"])
    rows, _ = cli_prompts.read_prompts(src)
    assert len(calls) == stop_at and calls[0] < len(PROMPTS)
    return r, out, cli_prompts.result_lines(rows, done)


@pytest.mark.parametrize("how, code, head", [("SIGINT", 130, "error: interrupted"),
                                             ("SIGTERM", 143, "error: terminated (SIGTERM)"),
                                             ("SIGHUP", 129, "error: terminated (SIGHUP)"),
                                             ("error", 2, "error: the batch failed")])
def test_finished_batches_are_kept_in_partial(tmp_path, monkeypatch, handlers_kept, how, code, head):
    r, out, finished = _run(tmp_path, monkeypatch, how)
    assert r.exit_code == code, r.output
    partial = tmp_path / "out.jsonl.partial"
    assert out.read_text() == "old results\n"  # --output as it was
    assert finished and partial.read_text() == "".join(finished)  # the first batch's rows, as written at the end
    assert '"w": 1e400' in finished[0] and '"output": ' in finished[0]
    last = " ".join(r.stderr.split()).split("error: ")[-1]
    assert "error: " + last == (f"{head}; --output {out} not written: the {len(finished)} finished rows are in "
                                f"{out}.partial"), r.stderr
    assert all(signal.getsignal(s) is h for s, h in handlers_kept.items())  # the caller's handlers are back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.jsonl.partial", "p.jsonl"]  # no temp


def test_a_crash_in_a_later_batch_keeps_them_too(tmp_path, monkeypatch, handlers_kept):
    r, out, finished = _run(tmp_path, monkeypatch, "crash")
    assert isinstance(r.exception, RuntimeError)  # an unexpected error keeps its traceback
    assert (tmp_path / "out.jsonl.partial").read_text() == "".join(finished) and out.read_text() == "old results\n"
    assert f"note: the run failed; --output {out} not written: the {len(finished)} finished rows" in r.stderr


def test_stopped_in_the_first_batch_writes_nothing(tmp_path, monkeypatch, handlers_kept):
    r, out, finished = _run(tmp_path, monkeypatch, "SIGINT", stop_at=1)
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "error: interrupted", r.output
    assert not finished and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "p.jsonl"]


def test_keep_finished_in_place_and_when_it_cannot(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO is written in place, as --output would be
    try:
        assert keep_finished(check_output(str(fifo)), str(fifo), ["a\n", "b\n"]) == \
            f"; the 2 finished rows were written to --output {fifo}"
        assert os.read(reader, 100) == b"a\nb\n"
    finally:
        os.close(reader)
    long = tmp_path / ("x" * (name_limit(str(tmp_path)) - 3))  # a legal name with no room for ".partial"
    note = keep_finished(check_output(str(long)), str(long), ["a\n"])
    assert note.startswith("; the 1 finished row could not be saved (file name is "), note
    assert keep_finished(check_output(str(long)), str(long), []) == ""
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "real.jsonl")  # beside the file a symlink names, as the rows would have gone there
    assert keep_finished(check_output(str(link)), str(link), ["a\n"]).endswith(f"are in {tmp_path}/real.jsonl.partial")
    assert (tmp_path / "real.jsonl.partial").read_text() == "a\n" and not link.exists()
