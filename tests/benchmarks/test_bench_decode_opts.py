"""bench_gemm_decode.py ``--only-nk`` (s19): the N:K pairs were read with raw int() inside the run, after the GPU
check, so "7168" or "a:b" was a ValueError traceback and a pair of no --models shape timed nothing and said nothing.
Now argparse reads them (benchrun.int_tuple_list) and main() checks them against the chosen models' shapes: one line
naming the option, exit 2, before ``require_cuda`` (stubbed here to raise, so nothing runs on any machine)."""

from __future__ import annotations

import importlib
import sys

import pytest


class _Reached(BaseException):
    """Raised by the stubbed require_cuda: the command line was accepted."""


def _run(monkeypatch, argv):
    mod = importlib.import_module("benchmarks.bench_gemm_decode")

    def reached(name):
        raise _Reached(name)

    monkeypatch.setattr(mod, "require_cuda", reached)
    monkeypatch.setattr(sys, "argv", ["bench_gemm_decode.py", *argv])
    mod.main()


@pytest.mark.parametrize("argv", [
    ["--only-nk", "7168"], ["--only-nk", "a:b"], ["--only-nk", "7168:0"], ["--only-nk", "7168:2048:1"],
    ["--only-nk", "7168:2048,"], ["--only-nk", "3072:2048"],  # a V2-Lite shape, but --models is v3
    ["--models", "v3,v2lite", "--only-nk", "7168:2049"],
])
def test_bad_only_nk_is_one_line_before_the_gpu_check(monkeypatch, capsys, tmp_path, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        _run(monkeypatch, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error: argument --only-nk" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    [], ["--only-nk", "7168:2048"], ["--only-nk", " 7168:2048 , 576:7168"],
    ["--models", "v3,v2lite", "--only-nk", "3072:2048,7168:2048"],
])
def test_good_only_nk_reaches_the_gpu_check(monkeypatch, tmp_path, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_Reached):
        _run(monkeypatch, argv)


def test_only_nk_is_parsed_to_pairs(monkeypatch, tmp_path):
    """The parsed value is the list of (N, K) tuples bench() filters the shapes with."""
    mod = importlib.import_module("benchmarks.bench_gemm_decode")
    seen = {}
    real_parse = mod.argparse.ArgumentParser.parse_args

    def spy(self, *a, **kw):
        seen["args"] = real_parse(self, *a, **kw)
        return seen["args"]

    monkeypatch.setattr(mod.argparse.ArgumentParser, "parse_args", spy)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_Reached):
        _run(monkeypatch, ["--only-nk", "7168:2048,576:7168"])
    assert seen["args"].only_nk == [(7168, 2048), (576, 7168)]
