"""``TRITONSEEK_BENCH_ARGS`` with an unbalanced quote (h2tester s25, read in the code): shlex's ValueError is not a
BenchError, so ``tritonseek bench`` ended in a traceback. Now a BenchError naming the variable, one line, exit 2, and
before the GPU check (so also on this CPU machine)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tritonseek import benchrun
from tritonseek.cli import app


@pytest.mark.parametrize("text, why", [('--contexts "1024', "No closing quotation"),
                                       ("--budget-s 60 \\", "No escaped character")])
def test_an_unsplittable_value_names_the_variable(monkeypatch, text, why):
    monkeypatch.setenv("TRITONSEEK_BENCH_ARGS", text)
    with pytest.raises(benchrun.BenchError, match=f"^TRITONSEEK_BENCH_ARGS=.* cannot be split .*\\({why}\\)$"):
        benchrun.env_bench_args()
    with pytest.raises(benchrun.BenchError, match="TRITONSEEK_BENCH_ARGS"):
        benchrun.run_suites(["mla"])
    r = CliRunner().invoke(app, ["bench", "mla"])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(lines) == 1 and lines[0].startswith("error: TRITONSEEK_BENCH_ARGS=") and why in lines[0], r.stderr


def test_split_as_a_shell_does(monkeypatch):
    monkeypatch.setenv("TRITONSEEK_BENCH_ARGS", "--batches 1,8 --note 'two words'")
    assert benchrun.env_bench_args() == ["--batches", "1,8", "--note", "two words"]
    monkeypatch.delenv("TRITONSEEK_BENCH_ARGS")
    assert benchrun.env_bench_args() == []
