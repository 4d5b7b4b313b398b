"""Benchmark command lines, session 19 (h5fix): every option goes through argparse and its benchrun type helpers
(a bad value is one line naming the option, exit 2, before any GPU work), and every script answers ``--help``
without a GPU. In-process with a patched ``sys.argv``; the GPU work is replaced by stubs, so a failure here never
launches anything.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from pathlib import Path

import pytest

from tritonseek.benchrun import int_at_least, nonnegative_float, out_file


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


# ---------------------------------------------------------------------------------------------- benchrun helpers
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-0.5", "x"])
def test_nonnegative_float_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        nonnegative_float(text)


def test_nonnegative_float_and_int_at_least_accept():
    assert nonnegative_float("0") == 0.0 and nonnegative_float("2.5") == 2.5
    assert int_at_least(2)("2") == 2
    with pytest.raises(argparse.ArgumentTypeError):
        int_at_least(2)("1")


def test_out_file_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    """The rows go through a temporary file beside the target: a read-only folder failed only at the first row.
    (os.access is patched: this box runs as root, which may write anywhere.)"""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if os.path.samefile(p, tmp_path) else real_access(p, m))
    with pytest.raises(argparse.ArgumentTypeError, match="not writable"):
        out_file(str(tmp_path / "rows.jsonl"))
    link = tmp_path.parent / f"{tmp_path.name}_link.jsonl"  # a symlink elsewhere into the read-only folder
    link.symlink_to(tmp_path / "rows.jsonl")
    try:
        with pytest.raises(argparse.ArgumentTypeError, match="not writable"):
            out_file(str(link))
    finally:
        link.unlink()
    assert out_file("") == "" and out_file("/dev/null") == "/dev/null"  # no file / written through


# ---------------------------------------------------------------------------------------------- bad values, exit 2
def _exit_2(monkeypatch, capsys, prog, call, argv, option):
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"error: argument {option}" in err[-1], err[-1]


def _module(name):
    return importlib.import_module(f"benchmarks.{name}")


BAD = [
    ("bench_moe", ["--reserve-s", "nan"], "--reserve-s"), ("bench_moe", ["--reserve-s", "-1"], "--reserve-s"),
    ("bench_moe", ["--reserve-s", "inf"], "--reserve-s"), ("bench_moe", ["--layer-peer", "2"], "--layer-peer"),
    ("bench_moe", ["--permute-breakdown", "-1"], "--permute-breakdown"),
    ("bench_e2e", ["--out", "/nonexistent_dir_h5/x.jsonl"], "--out"), ("bench_e2e", ["--budget-s", "nan"], "--budget-s"),
    ("bench_e2e", ["--budget-s", "-5"], "--budget-s"), ("bench_e2e", ["--layers", "1"], "--layers"),
    ("bench_e2e", ["--batches", "1,0"], "--batches"), ("bench_e2e", ["--contexts", ""], "--contexts"),
    ("bench_e2e", ["--suite", "e2e_decod"], "--suite"), ("bench_e2e", ["--mtp-ks", "0"], "--mtp-ks"),
    ("bench_e2e", ["--gen-tokens", "0"], "--gen-tokens"), ("bench_e2e", ["--verify-max-batch", "-1"], "--verify-max-batch"),
    ("bench_e2e", ["--backend", "trition"], "--backend"), ("bench_e2e", ["--peer-batches", "x"], "--peer-batches"),
    ("bench_e2e_tp", ["--out", "/nonexistent_dir_h5/x.jsonl"], "--out"), ("bench_e2e_tp", ["--reps", "0"], "--reps"),
    ("bench_e2e_tp", ["--budget-s", "inf"], "--budget-s"), ("bench_e2e_tp", ["--nccl-timeout-s", "nan"], "--nccl-timeout-s"),
    ("bench_e2e_tp", ["--batches", "-1"], "--batches"),
    ("check_v3_parity", ["--out", "/nonexistent_dir_h5/x.jsonl"], "--out"), ("check_v3_parity", ["--batch", "0"], "--batch"),
    ("check_v3_parity", ["--s-q", "1,0"], "--s-q"), ("check_v3_parity", ["--layers", "1"], "--layers"),
    ("profile_mtp_step", ["--out", "/nonexistent_dir_h5/x.json"], "--out"), ("profile_mtp_step", ["--tokens", "0"], "--tokens"),
    ("profile_mtp_step", ["--ks", "1,x"], "--ks"),
    ("bench_gemm_decode", ["--winners", "/nonexistent_dir_h5/w.json"], "--winners"),
    ("bench_gemm_decode", ["--sweep-out", "/nonexistent_dir_h5/s.jsonl"], "--sweep-out"),
    ("bench_mtp", ["--sweep-s", "nan"], "--sweep-s"), ("bench_mtp", ["--sweep-s", "-1"], "--sweep-s"),
    ("bench_mtp", ["--ops", "greedy,bogus"], "--ops"), ("bench_mtp", ["--sampler-ops", "bogus"], "--sampler-ops"),
    ("bench_mtp", ["--warm-ops", "bogus"], "--warm-ops"), ("bench_mtp", ["--warm-greedy", "3/2"], "--warm-greedy"),
    ("bench_mtp", ["--warm-greedy", "1"], "--warm-greedy"), ("bench_mtp", ["--sweep-modes", "greedy,x"], "--sweep-modes"),
]
# the script entry each takes its argv through (parse_args for those whose main builds a model first)
ENTRY = dict(bench_e2e="parse_args", bench_e2e_tp="parse_args", check_v3_parity="parse_args")


class _Parsed(BaseException):
    """Raised right after argparse accepted the command line: a value the parser let through fails the test at once
    instead of running the script (a BaseException, so no script's ``except Exception`` swallows it)."""


@pytest.mark.parametrize("script, argv, option", BAD, ids=[f"{s}{' '.join(a)}" for s, a, _ in BAD])
def test_bad_values_exit_2_naming_the_option(monkeypatch, capsys, tmp_path, script, argv, option):
    """nan / inf / negative seconds, zero or negative counts, unknown names and --out in a missing folder ran (nan
    never stops a budget), ended in a traceback mid-run, or lost the rows at the end (session 18 tester)."""
    mod = _module(script)
    parse = argparse.ArgumentParser.parse_known_args

    def parse_then_stop(self, *a, **k):
        parse(self, *a, **k)
        raise _Parsed(f"{script} accepted {argv}")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_then_stop)
    if "--out" not in argv and script not in ENTRY:
        argv = [*argv, "--out", str(tmp_path / "rows.jsonl")]
    entry = getattr(mod, ENTRY.get(script, "main"))
    _exit_2(monkeypatch, capsys, f"{script}.py", lambda: entry() if script not in ENTRY else entry(None), argv, option)
    assert not (tmp_path / "rows.jsonl").exists()


def test_bench_e2e_refuses_a_missing_out_folder_before_building_anything(monkeypatch, capsys):
    """bench_e2e --out /nodir/x.jsonl built the slice and measured every case, then failed at the first row."""
    mod = _module("bench_e2e")

    def build_slice(*a, **k):
        raise AssertionError("the slice was built before --out was checked")

    monkeypatch.setattr(mod, "build_slice", build_slice)
    with pytest.raises(SystemExit) as e:
        mod.main(["--tiny", "--device", "cpu", "--out", "/nonexistent_dir_h5/x.jsonl"])
    assert e.value.code == 2 and "argument --out: folder /nonexistent_dir_h5 does not exist" in capsys.readouterr().err


def test_bench_e2e_lists_parse_to_lists():
    """The suites add these lists to lists (``a.contexts + [a.mtp_context]``); '' turns an optional section off."""
    a = _module("bench_e2e").parse_args(["--quick", "--peer-batches", "", "--suite", "e2e_decode,v2lite"])
    assert a.contexts == [4096] and a.peer_batches == [1] and a.suites == ["e2e_decode", "v2lite"]
    a = _module("bench_e2e").parse_args(["--peer-batches", "", "--verify-ks", "", "--batches", "2, 4"])
    assert a.peer_batches == [] and a.verify_ks == [] and a.batches == [2, 4] and isinstance(a.contexts, list)


# ---------------------------------------------------------------------------------------------- --help, no GPU
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, runner", [("e2e_harness", "bench_e2e.py"), ("e2e_peers", "bench_e2e.py"),
                                          ("e2e_probes", "bench_e2e.py")])
def test_e2e_modules_answer_help(monkeypatch, capsys, name, runner):
    """`python benchmarks/e2e_peers.py --help` imported transformers and the model, then printed nothing (exit 0):
    these modules hold parts of bench_e2e.py and now say so (exit 0 for --help, 2 otherwise)."""
    for argv, code in ((["--help"], 0), ([], 2)):
        monkeypatch.setattr(sys, "argv", [name + ".py", *argv])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / "benchmarks" / f"{name}.py"), run_name="__main__")
        assert e.value.code == code and runner in capsys.readouterr().out


def test_mtp_compile_check_answers_help(monkeypatch, capsys):
    """mtp_compile_check.py had no command line: run as a script it imported the kernels and printed nothing. Now
    --help prints its usage, and under the interpreter (which compiles nothing) it says so, exit 2."""
    path = str(ROOT / "benchmarks" / "mtp_compile_check.py")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout first on sys.path
    monkeypatch.setattr(sys, "argv", ["mtp_compile_check.py", "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(path, run_name="__main__")
    assert e.value.code == 0 and "usage: mtp_compile_check.py" in capsys.readouterr().out
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(sys, "argv", ["mtp_compile_check.py"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(path, run_name="__main__")
    assert e.value.code == 2 and "TRITON_INTERPRET=1" in capsys.readouterr().err
