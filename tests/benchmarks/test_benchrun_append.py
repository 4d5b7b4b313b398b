"""``tritonseek bench`` appends each suite's rows to benchmarks/results/<gpu>.jsonl when that suite finishes. Before
(stop 25, "noticed, left alone") every row was appended after the last suite, so a crash, a failing script or a
Ctrl-C in a later suite lost the rows of the suites that had finished. The suite scripts are replaced by a stand-in
for subprocess.run that writes rows to --out (no GPU needed)."""

from __future__ import annotations

import json
import os
import signal
import types

import pytest
import torch
from typer.testing import CliRunner

from tritonseek import benchrun
from tritonseek.cli import app


def _setup(monkeypatch, tmp_path, stop=None):
    """Suites mla and fp8_gemm write 2 and 3 rows; moe stops as ``stop`` says (None: 1 row)."""
    bdir = tmp_path / "benchmarks"
    bdir.mkdir()
    (bdir / "bench_mla.py").write_text("")
    results = bdir / "results" / "test-gpu.jsonl"
    results.parent.mkdir()
    results.write_text('{"suite": "old"}\n')  # rows of earlier runs stay
    counts = {"bench_mla.py": 2, "bench_fp8_gemm.py": 3, "bench_moe.py": 1}

    def fake_run(cmd, **kw):
        script = os.path.basename(cmd[1])
        if script == "bench_moe.py" and stop == "fail":
            return types.SimpleNamespace(returncode=1)
        if script == "bench_moe.py" and stop == "SIGINT":
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the suite runs
            raise AssertionError("SIGINT did not interrupt the suite")
        with open(cmd[cmd.index("--out") + 1], "w") as f:
            for i in range(counts[script]):
                f.write(json.dumps({"suite": script, "case": {"i": i}}) + "\n")
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(benchrun, "benchmarks_dir", lambda: bdir)
    monkeypatch.setattr(benchrun, "gpu_slug", lambda: "test-gpu")
    monkeypatch.setattr(benchrun.subprocess, "run", fake_run)
    monkeypatch.delenv("TRITONSEEK_BENCH_ARGS", raising=False)
    return results


def _suites(results):
    return [json.loads(line)["suite"] for line in results.read_text().splitlines()]


def test_all_suites_append_as_before(monkeypatch, tmp_path):
    results = _setup(monkeypatch, tmp_path)
    rows = benchrun.run_suites(["mla", "fp8_gemm", "moe"])
    assert [r["suite"] for r in rows] == ["bench_mla.py"] * 2 + ["bench_fp8_gemm.py"] * 3 + ["bench_moe.py"]
    assert _suites(results) == ["old"] + [r["suite"] for r in rows]


def test_a_failing_later_suite_keeps_the_finished_rows(monkeypatch, tmp_path):
    results = _setup(monkeypatch, tmp_path, stop="fail")
    with pytest.raises(benchrun.BenchError, match=f"suite moe failed .*; the 5 rows of the suites that finished are "
                                                  f"in {results}$"):
        benchrun.run_suites(["mla", "fp8_gemm", "moe"])
    assert _suites(results) == ["old"] + ["bench_mla.py"] * 2 + ["bench_fp8_gemm.py"] * 3


def test_ctrl_c_in_a_later_suite_keeps_the_finished_rows(monkeypatch, tmp_path):
    results = _setup(monkeypatch, tmp_path, stop="SIGINT")
    before = signal.getsignal(signal.SIGINT)
    try:
        r = CliRunner().invoke(app, ["bench", "mla", "moe"])
    finally:
        signal.signal(signal.SIGINT, before)
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == [f"error: interrupted; the 2 rows of the suites that finished are in "
                                             f"{results}"], r.output
    assert _suites(results) == ["old"] + ["bench_mla.py"] * 2


def test_append_rows_never_leaves_half_a_row(monkeypatch, tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 0}\n')
    real, calls = os.write, []

    def short_write(fd, data):  # the disk fills up during the second row
        calls.append(data)
        return real(fd, data if len(calls) == 1 else data[: len(data) // 2])

    monkeypatch.setattr(benchrun.os, "write", short_write)
    with pytest.raises(OSError, match="could not append a whole row"):
        benchrun.append_rows(path, [{"a": 1}, {"a": 2, "b": "x" * 50}, {"a": 3}])
    monkeypatch.undo()
    assert path.read_text() == '{"a": 0}\n{"a": 1}\n'  # the half row was cut back; the file ends with a whole line
