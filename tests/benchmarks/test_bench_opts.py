"""JSON / index / shape options of the sweep and probe scripts (tester 2, s19): they were read with raw json.loads() /
int() after the GPU check, so a bad value was a JSONDecodeError / IndexError traceback, and a config outside the
launcher's spec reached the launcher mid-run. Now argparse checks them (benchrun.json_list with the launcher's rules,
index_list, int_tuple_list): one line naming the option, exit 2, before ``require_cuda`` (stubbed here to raise, so
nothing runs on any machine). Good values are shown to reach that point.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest


class _Reached(BaseException):
    """Raised by the stubbed require_cuda: the command line was accepted."""


def _run(monkeypatch, script, argv):
    mod = importlib.import_module(f"benchmarks.{script}")

    def reached(name):
        raise _Reached(name)

    monkeypatch.setattr(mod, "require_cuda", reached)
    if hasattr(mod, "WS_CANDIDATES"):  # main() narrows the module's list in place: give it a copy
        monkeypatch.setattr(mod, "WS_CANDIDATES", list(mod.WS_CANDIDATES))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    mod.main()


BAD = [
    ("bench_grouped_ws", ["--cands-json", "notjson"], "--cands-json"),
    ("bench_grouped_ws", ["--cands-json", "[]"], "--cands-json"),
    ("bench_grouped_ws", ["--cands-json", '[{"STAGGER": 5}]'], "--cands-json"),  # removed knob
    ("bench_grouped_ws", ["--cands-json", '[{"NUM_STAGES": 12}]'], "--cands-json"),
    ("bench_grouped_ws", ["--cands-json", '[{}, 3]'], "--cands-json"),
    ("bench_grouped_ws", ["--cands", "99"], "--cands"), ("bench_grouped_ws", ["--cands", "-1"], "--cands"),
    ("bench_grouped_ws", ["--cands", "x"], "--cands"), ("bench_grouped_ws", ["--smoke-cfgs", "9"], "--smoke-cfgs"),
    ("bench_grouped_ws", ["--smoke", "--cands", "1", "--smoke-cfgs", "1"], "--smoke-cfgs"),  # 1 of a 1-entry list
    ("bench_grouped_ws", ["--cases", "zzz"], "--cases"), ("bench_grouped_ws", ["--budget-s", "nan"], "--budget-s"),
    ("bench_grouped_ws", ["--warm-s", "-1"], "--warm-s"), ("bench_grouped_ws", ["--ab", "-3"], "--ab"),
    ("bench_grouped_ws", ["--out", "/nonexistent_dir_fixd/x.jsonl"], "--out"),
    ("bench_fp8_gemm", ["--variants", "notjson"], "--variants"),
    ("bench_fp8_gemm", ["--variants", '[{"BLOCK_N": 96}]'], "--variants"),
    ("bench_fp8_gemm", ["--variants", '["tl", {"NOPE": 1}]'], "--variants"),
    ("bench_fp8_gemm", ["--variants", '["cl"]'], "--variants"),
    ("bench_fp8_gemm", ["--variants", '[{"STREAM_K": true, "GRID": -1}]'], "--variants"),
    ("bench_fp8_gemm", ["--only-m", "0"], "--only-m"), ("bench_fp8_gemm", ["--only-m", "64,x"], "--only-m"),
    ("bench_fp8_gemm", ["--only-nk", "7168"], "--only-nk"), ("bench_fp8_gemm", ["--only-nk", "a:b"], "--only-nk"),
    ("bench_fp8_gemm", ["--only-nk", "7168:2049"], "--only-nk"),  # no such shape: the run timed nothing
    ("probe_fp8_gemm_ab", ["--variant", "x={bad"], "--variant"),
    ("probe_fp8_gemm_ab", ["--variant", "noequals"], "--variant"),
    ("probe_fp8_gemm_ab", ["--variant", 'x={"SPLIT": 1}'], "--variant"),  # a bool key given an int
    ("probe_fp8_gemm_ab", ["--b", "[1]"], "--b"), ("probe_fp8_gemm_ab", ["--b", '{"WGS": 4}'], "--b"),
    ("probe_fp8_gemm_ab", ["--shapes", "4096:7168"], "--shapes"),
    ("probe_fp8_gemm_ab", ["--shapes", "4096:0:7168"], "--shapes"),
    ("probe_fp8_gemm_ab", ["--rounds", "0"], "--rounds"), ("probe_fp8_gemm_ab", ["--gpu-ab", "-1"], "--gpu-ab"),
    ("probe_fp8_gemm_ab", ["--rows", "/nonexistent_dir_fixd/r.jsonl"], "--rows"),
    ("probe_decode_small", ["--q-configs", "notjson"], "--q-configs"),
    ("probe_decode_small", ["--q-configs", '[{"BLOCK_C": 64}]'], "--q-configs"),
    ("probe_decode_small", ["--o-configs", '[{"STAGES": 0}]'], "--o-configs"),
    ("probe_decode_small", ["--o-configs", '{"STAGES": 4}'], "--o-configs"),  # an object, not a list
    ("probe_decode_small", ["--only", "o", "--o-configs", '[{"BLOCK_D": 64}]'], "--o-configs"),
]


@pytest.mark.parametrize("script, argv, option", BAD, ids=[f"{s} {' '.join(a)}" for s, a, _ in BAD])
def test_bad_values_are_one_line_before_the_gpu_check(monkeypatch, capsys, tmp_path, script, argv, option):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        _run(monkeypatch, script, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"error: argument {option}" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


GOOD = [
    ("bench_grouped_ws", ["--cands-json", '[{}, {"NUM_STAGES": 5, "GROUP_M": 16}]', "--smoke", "--smoke-cfgs", "1"]),
    ("bench_grouped_ws", ["--cands", "0,3", "--cases", "masked,routed", "--ab", "20", "--warm-s", "0"]),
    ("bench_fp8_gemm", ["--variants", '["tl", {"SPLIT": true, "UNROLL2": true, "WGS": 3, "SCALE_AHEAD": 1}, '
                                      '{"STREAM_K": true, "GRID": 112}]', "--only-m", "4096", "--only-nk", "7168:2048"]),
    ("bench_fp8_gemm", ["--small", "--only-nk", "576:7168"]),
    ("probe_fp8_gemm_ab", ["--shapes", "128:7168:16384", "--gpu-ab", "60", "--variant", 'aa={"STREAM_K": true}',
                           "--variant", "old=@s17", "--variant", "tl=null", "--b", "@s17"]),
    ("probe_decode_small", ["--only", "o16", "--o-configs", '[{"BLOCK_D": 64, "STAGES": 3}, {}]',
                            "--q-configs", '[{"PDL": true}]']),
    ("probe_mla_ws_timeline", ["--ab", "{}", '{"OVEC": 1}']),
]


@pytest.mark.parametrize("script, argv", GOOD, ids=[f"{s} {' '.join(a)}" for s, a in GOOD])
def test_good_values_reach_the_gpu_check(monkeypatch, script, argv):
    with pytest.raises(_Reached):
        _run(monkeypatch, script, argv)


def test_probe_mla_ws_timeline_ab_needs_a_config(monkeypatch, capsys):
    """A bare --ab ran the timeline mode instead, silently."""
    with pytest.raises(SystemExit) as e:
        _run(monkeypatch, "probe_mla_ws_timeline", ["--ab"])
    assert e.value.code == 2 and "argument --ab: expected at least one argument" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0", "1,2", " 2 "])
def test_index_list_in_range(text):
    from tritonseek.benchrun import index_list

    assert index_list(3)(text) == [int(x) for x in text.split(",")]
    with pytest.raises(argparse.ArgumentTypeError):
        index_list(2)(text + ",2")
