"""Suite ``cold_start``: process start → first generated token of ``tritonseek generate``.

    PYTHONPATH=. python benchmarks/bench_cold_start.py [--out rows.jsonl] [--max-batch 8] [--model PATH]

For each model (default: the embedded one) in a fresh, empty TRITON_CACHE_DIR:
1. "cold": ``python -m tritonseek.cli generate -p … -n 8`` with the empty cache (every kernel compiles);
2. ``tritonseek warmup --max-batch N`` into the same cache (its time and new entries are recorded);
3. "warm": the same generate again; also counts the cache entries it added (0 = warmup covered it).
   ``--no-warmup`` skips step 2: "warm" then reuses what the cold generate compiled (a short device run).
The clock starts just before the child process is spawned and stops when its stdout first shows
text beyond the echoed prompt (the CLI streams each token as it is sampled); the child is then
killed. Rows: {suite: cold_start, case: {model, cache}, seconds, new_cache_entries, target_s: 20, …}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tritonseek.benchrun import git_commit, out_file, positive_int, require_cuda  # noqa: E402

PROMPT = "def fibonacci(n):"
TARGET_S = 20.0


def _entries(d: Path) -> int:
    return sum(1 for _ in d.iterdir()) if d.is_dir() else 0


def _env(cache: Path) -> dict:
    return {**os.environ, "TRITON_CACHE_DIR": str(cache),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def time_to_first_token(model: str | None, cache: Path, new_tokens: int = 8) -> float:
    """Seconds from spawning ``tritonseek generate`` to its first generated text; the process is then
    killed (the rest of the generation is not what cold start measures)."""
    cmd = [sys.executable, "-m", "tritonseek.cli", "generate", "-p", PROMPT, "-n", str(new_tokens)]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, first = b"", None
    while first is None:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        seen += chunk
        if len(seen) > len(PROMPT.encode()):
            first = time.perf_counter() - t0
    if first is not None:
        proc.kill()
    _, err = proc.communicate()
    if first is None:
        raise RuntimeError(f"generate failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return first


def warm(model: str | None, cache: Path, max_batch: int) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "tritonseek.cli", "warmup", "--max-batch", str(max_batch)]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env(cache), cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"warmup failed (exit {r.returncode}): {r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout.strip()


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, type=out_file, help="append JSON rows here")
    ap.add_argument("--model", action="append", default=None, help="checkpoint folder (repeatable; default: embedded)")
    ap.add_argument("--max-batch", type=positive_int, default=4)
    ap.add_argument("--skip-cold", action="store_true", default=bool(os.environ.get("TRITONSEEK_COLD_START_SKIP_COLD")),
                    help="only warmup + the warm start (default: $TRITONSEEK_COLD_START_SKIP_COLD)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="warm = a second generate on the cache the cold generate filled (no `tritonseek warmup` "
                         "step: a short device run; the row says warmup_s null)")
    ap.add_argument("--cache-dir", default=os.environ.get("TRITONSEEK_COLD_START_CACHE"),
                    help="use (and keep) this empty folder as the Triton cache instead of a temporary one "
                         "(default: $TRITONSEEK_COLD_START_CACHE, else a temporary folder)")
    args = ap.parse_args(argv)
    import torch
    import triton

    require_cuda("bench_cold_start")
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows = []

    def emit(row: dict) -> None:  # written at once, so a run cut short keeps what it measured
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")

    for model in args.model or [None]:
        name = Path(model).name if model else "tritonseek-tiny (default)"
        with tempfile.TemporaryDirectory(prefix="triton-cache-") as tmp:
            cache = Path(args.cache_dir) if args.cache_dir else Path(tmp)
            cache.mkdir(parents=True, exist_ok=True)
            if _entries(cache):
                raise SystemExit(f"--cache-dir {cache} is not empty; a cold start needs an empty cache")
            base = dict(suite="cold_start", us=None, tflops=None, gbps=None, peer=None, peer_us=None,
                        ratio_vs_peer=None, target_s=TARGET_S, **env)
            if not args.skip_cold:
                first = time_to_first_token(model, cache)
                cold_entries = _entries(cache)
                print(f"{name} cold: first token {first:.1f} s, {cold_entries} cache entries by then", flush=True)
                emit(dict(base, case=dict(model=name, cache="cold"), seconds=round(first, 2),
                          new_cache_entries=cold_entries, meets_target=first <= TARGET_S))
            if args.no_warmup:
                warm_s, msg = None, "no warmup step (the cold generate's cache)"
            else:
                warm_s, msg = warm(model, cache, args.max_batch)
            print(f"{name} warmup --max-batch {args.max_batch}: {warm_s} s; {msg}", flush=True)
            before = _entries(cache)
            first_w = time_to_first_token(model, cache)
            new = _entries(cache) - before
            print(f"{name} warm: first token {first_w:.1f} s (target {TARGET_S:.0f} s), {new} new cache entries",
                  flush=True)
            emit(dict(base, case=dict(model=name, cache="warm"), seconds=round(first_w, 2),
                      new_cache_entries=new, warmup_s=None if warm_s is None else round(warm_s, 2),
                      warmup_max_batch=None if warm_s is None else args.max_batch,
                      meets_target=first_w <= TARGET_S))
    return rows


if __name__ == "__main__":
    main()
