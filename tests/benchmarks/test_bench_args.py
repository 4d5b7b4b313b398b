"""Benchmark command lines, session 19 (h5fix): every option goes through argparse and its benchrun type helpers
(a bad value is one line naming the option, exit 2, before any GPU work), and every script answers ``--help``
without a GPU. In-process with a patched ``sys.argv``; the GPU work is replaced by stubs, so a failure here never
launches anything.
"""

from __future__ import annotations

import importlib
import sys

import pytest


# ---------------------------------------------------------------------------------------------- probe_wgmma_fp8
@pytest.fixture
def probe(monkeypatch):
    mod = importlib.import_module("benchmarks.probe_wgmma_fp8")
    calls = []
    monkeypatch.setattr(mod, "compile_only", lambda: calls.append("compile_only"))
    monkeypatch.setattr(mod, "measure", lambda jobs=None: calls.append(("measure", jobs)))
    return mod, calls


@pytest.mark.parametrize("argv, want", [(["--compile"], "compile_only"), (["--compile-only"], "compile_only"),
                                        (["--jobs=3"], ("measure", 3)), (["--job", "2"], ("measure", 2)),
                                        ([], ("measure", None))])
def test_probe_wgmma_runs_what_argparse_parsed(probe, monkeypatch, argv, want):
    """"--compile" (an abbreviation argparse accepts) ran the GPU loop and "--jobs=3" compiled nothing first: the
    script looked for the literal words in sys.argv beside argparse."""
    mod, calls = probe
    monkeypatch.setattr(sys, "argv", ["probe_wgmma_fp8.py", *argv])
    mod.main()
    assert calls == [want]


@pytest.mark.parametrize("argv", [["--jobs", "0"], ["--jobs", "-2"], ["--jobs", "x"],
                                  ["--compile-only", "--jobs", "2"]])
def test_probe_wgmma_refuses_bad_jobs(probe, monkeypatch, capsys, argv):
    """--jobs 0 reached ProcessPoolExecutor(0) (a ValueError caught as 'precompile failed'); --jobs with
    --compile-only was silently ignored."""
    mod, calls = probe
    monkeypatch.setattr(sys, "argv", ["probe_wgmma_fp8.py", *argv])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2 and calls == []
    assert "error: argument --" in capsys.readouterr().err
