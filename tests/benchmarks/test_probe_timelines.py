"""probe_grouped_ws_timeline / probe_mla_ws_timeline command lines (tester, s19): options are argparse types checked
before any GPU work (configs against the launchers' config specs, --out an output folder whose parent exists), and
probe_mla_ws_timeline exits 1 when a case failed (it exited 0 with every case failed). In-process, GPU work stubbed.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

GROUPED = [(["--reps", "0"], "--reps"), (["--reps", "-3"], "--reps"), (["--warm-s", "nan"], "--warm-s"),
           (["--warm-s", "-1"], "--warm-s"), (["--cases", "nonsense"], "--cases"),
           (["--ab-cfgs", '{"STAGGER": -5}'], "--ab-cfgs"), (["--timeline-cfgs", '{"EARLY_TMA": 1}'], "--timeline-cfgs"),
           (["--ab-cfgs", "[1]"], "--ab-cfgs"), (["--out", "/nonexistent_s19/x.jsonl"], "--out")]
MLA = [(["--cfg", "notjson"], "--cfg"), (["--cases", "zzz"], "--cases"), (["--ab", '{"OVEC": 3}'], "--ab"),
       (["--ab", '{"BOGUS": true}'], "--ab"), (["--reps", "0"], "--reps"), (["--out", "/nonexistent_s19/d"], "--out")]


@pytest.mark.parametrize("script, argv, option", [("probe_grouped_ws_timeline", a, o) for a, o in GROUPED]
                         + [("probe_mla_ws_timeline", a, o) for a, o in MLA])
def test_bad_options_exit_2_before_gpu_work(monkeypatch, capsys, tmp_path, script, argv, option):
    mod = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU box: the option check must come first
    monkeypatch.setattr(mod, "run_case", lambda *a, **k: pytest.fail("GPU work started"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"{script}.py: error: argument {option}")
    assert list(tmp_path.iterdir()) == [] and not os.path.exists("/nonexistent_s19")


def test_out_folder_rules(tmp_path):
    import argparse

    from tritonseek.benchrun import out_dir

    assert out_dir(str(tmp_path)) == str(tmp_path) and out_dir(str(tmp_path / "new")) == str(tmp_path / "new")
    (tmp_path / "f.jsonl").write_text("")
    for bad in (tmp_path / "f.jsonl", tmp_path / "missing" / "new"):
        with pytest.raises(argparse.ArgumentTypeError):
            out_dir(str(bad))


def test_probe_mla_exits_1_when_a_case_failed(monkeypatch, capsys, tmp_path):
    mod = importlib.import_module("benchmarks.probe_mla_ws_timeline")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ran = []

    def run_case(name, reps, out_dir, overrides):
        ran.append((name, overrides))
        if name == "16x1v":
            raise RuntimeError("kernel failed")

    monkeypatch.setattr(mod, "run_case", run_case)
    monkeypatch.setattr(sys, "argv", ["probe_mla_ws_timeline.py", "--out", str(tmp_path / "d"), "--cases", "32x1v",
                                      "16x1v", "--cfg", '{"OVEC": 2}'])
    assert mod.main() == 1
    assert ran == [("32x1v", {"OVEC": 2}), ("16x1v", {"OVEC": 2})] and (tmp_path / "d").is_dir()
    assert "failed cases: 16x1v" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["probe_mla_ws_timeline.py", "--out", str(tmp_path / "d"), "--cases", "32x1v"])
    assert mod.main() == 0
