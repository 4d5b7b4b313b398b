"""``tritonseek bench``: run the benchmark suites of a source checkout and collect their rows.

Each suite is a script in ``benchmarks/`` (bench_mla.py, bench_fp8_gemm.py, bench_moe.py,
bench_mtp.py, bench_e2e.py, bench_fused_small.py, bench_cold_start.py, bench_e2e_tp.py) that writes JSON lines to
``--out``; this module runs them one after
another, appends every row to ``benchmarks/results/<gpu>.jsonl`` and returns the rows.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

SUITES = {
    "mla": "bench_mla.py",
    "fp8_gemm": "bench_fp8_gemm.py",
    "moe": "bench_moe.py",
    "mtp": "bench_mtp.py",
    "e2e": "bench_e2e.py",
    "fused_small": "bench_fused_small.py",
    "cold_start": "bench_cold_start.py",
    "e2e_tp": "bench_e2e_tp.py",  # two GPUs (TP2/EP2 vs TP1); prints a skip line and no rows on one GPU
}


class BenchError(RuntimeError):
    """The benchmarks cannot run here (no GPU, no source checkout, unknown suite, failed script)."""


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source checkout this package was imported from."""
    d = Path(__file__).resolve().parent.parent / "benchmarks"
    if not (d / "bench_mla.py").is_file():
        raise BenchError(f"benchmarks/ not found next to the package ({d}); run from a source checkout of tritonseek")
    return d


def gpu_slug() -> str:
    import torch

    return torch.cuda.get_device_name().lower().replace("nvidia ", "").replace(" ", "-")


def run_suites(names: list[str], extra_args: list[str] | None = None) -> list[dict]:
    """Run the named suites (all when empty) on the current CUDA GPU; returns their rows.

    extra_args: arguments passed to every suite script; None: ``shlex.split`` of the environment
    variable ``TRITONSEEK_BENCH_ARGS`` (e.g. ``--batches 1,8 --contexts 1024 --budget-s 60`` for a short
    e2e run), else none.
    Raises:
        BenchError: unknown suite, no CUDA GPU, no benchmarks/ folder, or a script that fails.
    """
    import torch

    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise BenchError(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    if not torch.cuda.is_available():
        raise BenchError("tritonseek bench needs a CUDA GPU and torch sees none")
    bdir = benchmarks_dir()
    if extra_args is None:
        extra_args = shlex.split(os.environ.get("TRITONSEEK_BENCH_ARGS", ""))
    rows: list[dict] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bdir.parent), os.environ.get("PYTHONPATH", "")])}
    for name in names or list(SUITES):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.jsonl"
            cmd = [sys.executable, str(bdir / SUITES[name]), "--out", str(out), *(extra_args or [])]
            r = subprocess.run(cmd, env=env, cwd=bdir.parent)
            if r.returncode != 0:
                raise BenchError(f"suite {name} failed (exit {r.returncode}): {' '.join(cmd)}")
            if out.is_file():
                rows += [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    results = bdir / "results" / f"{gpu_slug()}.jsonl"
    results.parent.mkdir(exist_ok=True)
    with results.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows
