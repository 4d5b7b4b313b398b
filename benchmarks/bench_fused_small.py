"""Suite ``fused_small``: the decode path's fused small kernels vs the torch ops they replace.

    PYTHONPATH=. python benchmarks/bench_fused_small.py [--out rows.jsonl]

Ops at DeepSeek-V3 widths (hidden 7168, 128 heads, nope 128, rope 64, kv_lora 512, page 64),
tokens 1 / 32 / 128:
- ``add_rms_norm``: fused_add_rms_norm vs torch ``h = x + r`` + the model's fp32 RMSNorm code.
- ``rms_norm``: rms_norm vs the torch RMSNorm code.
- ``mla_rope_cache``: mla_rope_cache vs the previous model path (cos/sin from positions, two
  interleaved rotaries, kv_a RMSNorm, cat, the Triton write_latent_cache kernel).
Times: ``us`` eager (do_bench median), ``us_graph`` CUDA-graph replay (benchmarks/timing.py, 8 calls
per graph over 8 input sets); gbps from the graph time over the bytes the fused kernel must move;
ratio_vs_peer = peer_us / us_graph (peer timed the same way).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tritonseek without PYTHONPATH
from timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import git_commit, name_list, out_file, require_cuda  # noqa: E402
from tritonseek.kernels.mla_prefill import write_latent_cache  # noqa: E402
from tritonseek.kernels.norm import fused_add_rms_norm, rms_norm  # noqa: E402
from tritonseek.kernels.reference.norm import fused_add_rms_norm_ref, rms_norm_ref  # noqa: E402
from tritonseek.kernels.reference.rope import cos_sin_cache_ref, rotary_interleaved_ref  # noqa: E402
from tritonseek.kernels.rope_cache import mla_rope_cache  # noqa: E402

HIDDEN, HEADS, NOPE, ROPE, KV_LORA, PAGE = 7168, 128, 128, 64, 512, 64
SETS = 8


def _env():
    return dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                commit=git_commit(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _time(fns):
    eager = triton.testing.do_bench(lambda: [f() for f in fns], return_mode="median") * 1000 / len(fns)
    return eager, graph_replay_us(fns)


def _norm_cases(T, dev):
    xs = [torch.randn(T, HIDDEN, device=dev, dtype=torch.bfloat16) for _ in range(SETS)]
    rs = [torch.randn(T, HIDDEN, device=dev, dtype=torch.bfloat16) * 4 for _ in range(SETS)]
    w = torch.randn(HIDDEN, device=dev, dtype=torch.bfloat16)
    y, h = fused_add_rms_norm(xs[0], rs[0], w, 1e-6)
    yr, hr = fused_add_rms_norm_ref(xs[0], rs[0], w, 1e-6)
    assert torch.equal(h, hr) and (y.float() - yr.float()).abs().max() <= 2.0**-7 * (1 + yr.float().abs().max())
    nbytes = 2 * T * HIDDEN * 2 + 2 * T * HIDDEN * 2 + HIDDEN * 2
    yield ("add_rms_norm", nbytes, [lambda i=i: fused_add_rms_norm(xs[i], rs[i], w, 1e-6) for i in range(SETS)],
           [lambda i=i: fused_add_rms_norm_ref(xs[i], rs[i], w, 1e-6) for i in range(SETS)])
    nbytes = 2 * T * HIDDEN * 2 + HIDDEN * 2
    yield ("rms_norm", nbytes, [lambda i=i: rms_norm(xs[i], w, 1e-6) for i in range(SETS)],
           [lambda i=i: rms_norm_ref(xs[i], w, 1e-6) for i in range(SETS)])


def _rope_case(T, dev):
    inv = 1.0 / (10000.0 ** (torch.arange(0, ROPE, 2, dtype=torch.float32, device=dev) / ROPE)) / 40.0
    max_pos = 163840
    cs = cos_sin_cache_ref(inv, max_pos)
    qs = [torch.randn(T, HEADS, NOPE + ROPE, device=dev, dtype=torch.bfloat16) for _ in range(SETS)]
    kvs = [torch.randn(T, KV_LORA + ROPE, device=dev, dtype=torch.bfloat16) for _ in range(SETS)]
    pos = [torch.randint(0, 4096, (T,), device=dev) for _ in range(SETS)]
    w = torch.randn(KV_LORA, device=dev, dtype=torch.bfloat16)
    blocks = (T * SETS + PAGE - 1) // PAGE + 1
    cache = torch.randn(blocks, PAGE, 1, KV_LORA + ROPE, device=dev, dtype=torch.bfloat16)
    slots = [torch.arange(i * T, (i + 1) * T, device=dev) for i in range(SETS)]

    def fused(i):
        # check_ids=False: time the kernel, not the range check's sync
        return mla_rope_cache(qs[i], kvs[i], pos[i], cs, w, 1e-6, cache, slots[i], check_ids=False)

    def torch_path(i):  # the model's previous triton-backend code for the same work
        q, kv = qs[i], kvs[i]
        angles = pos[i].to(torch.float32)[:, None] * inv[None, :]
        cos, sin = angles.cos(), angles.sin()
        q_pe = rotary_interleaved_ref(q[..., NOPE:], cos, sin)
        kv_c, k_pe = kv.split([KV_LORA, ROPE], dim=-1)
        kv_c = rms_norm_ref(kv_c, w, 1e-6)
        k_pe = rotary_interleaved_ref(k_pe.unsqueeze(1), cos, sin).squeeze(1)
        write_latent_cache(cache, torch.cat([kv_c, k_pe], -1), slots[i], check_ids=False)
        return q_pe

    a, lat = fused(0)
    b = torch_path(0)
    assert (a.float() - b.float()).abs().max() <= 2.0**-6 * (1 + b.float().abs().max())
    nbytes = T * (HEADS * ROPE * 2 * 2 + (KV_LORA + ROPE) * 2 * 3 + ROPE * 4 + 16) + KV_LORA * 2
    yield ("mla_rope_cache", nbytes, [lambda i=i: fused(i) for i in range(SETS)],
           [lambda i=i: torch_path(i) for i in range(SETS)])


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, type=out_file, help="append JSON rows here")
    ap.add_argument("--ops", default="add_rms_norm,rms_norm,mla_rope_cache",
                    type=name_list(("add_rms_norm", "rms_norm", "mla_rope_cache")), help="comma-separated ops to time")
    args = ap.parse_args(argv)
    require_cuda("bench_fused_small")
    dev, env, rows = torch.device("cuda"), _env(), []
    for T in (1, 32, 128):
        ops = set(args.ops)
        cases = [*(_norm_cases(T, dev) if ops & {"add_rms_norm", "rms_norm"} else ()),
                 *(_rope_case(T, dev) if "mla_rope_cache" in ops else ())]
        for op, nbytes, fns, peer in cases:
            if op not in ops:
                continue
            us, us_g = _time(fns)
            peer_us, peer_g = _time(peer)
            rows.append(dict(suite="fused_small", case=dict(op=op, tokens=T, hidden=HIDDEN), us=round(us, 2),
                             us_graph=round(us_g, 2), tflops=None, gbps=round(nbytes / us_g / 1e3, 1),
                             peer="torch ops (model's previous code)", peer_us=round(peer_g, 2),
                             peer_us_eager=round(peer_us, 2), ratio_vs_peer=round(peer_g / us_g, 2), **env))
            print(f"{op:16s} T={T:4d}  fused {us_g:7.2f} us (eager {us:6.1f})  torch {peer_g:7.2f} us "
                  f"(eager {peer_us:6.1f})  x{peer_g / us_g:5.2f}  {rows[-1]['gbps']} GB/s", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    main()
