"""benchmarks/probe_host_overhead.py on the CPU (--stub: interpreter, launches stubbed): it builds its cases and writes
rows with a positive per-call host time."""

import json
import os
import subprocess
import sys


def test_stub_rows(tmp_path):
    out = tmp_path / "rows.jsonl"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "benchmarks/probe_host_overhead.py", "--stub", "--calls", "3", "--reps", "2",
                        "--cases", "rms_norm_128x7168,gemm_tl_m64_2112x7168", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["case"] for row in rows] == ["rms_norm_128x7168", "gemm_tl_m64_2112x7168"]
    assert all(row["us_host"] > 0 and len(row["reps"]) == 2 and row["device"] == "cpu-stub" for row in rows)
