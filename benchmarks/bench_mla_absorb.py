"""Benchmark suite ``mla_absorb``: the absorbed MLA decode products (q_nope·W_UK ‖ q_pe, o_lat·W_UVᵀ).

    PYTHONPATH=. python benchmarks/bench_mla_absorb.py [--tokens 1,8,32] [--out rows.jsonl]

DeepSeek-V3 widths (128 heads, qk_nope 128, kv_lora 512, rope 64, v_head_dim 128), bf16. Fresh
random weights rotated over enough layers (6 × 16.8 MB per product) that L2 (50 MB) does not
hold them. Timed as median CUDA-graph replays (``us_graph``; the decode step runs these under
graphs) and eagerly (``us``). GB/s = (weight + activation bytes read + bytes written) / us_graph.
Peer in the same run: the torch path the model used before (einsum in bf16, + torch.cat for q).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.fp8_gemm_timing import eager_time_us  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import git_commit, out_file, positive_int_list, require_cuda, write_rows  # noqa: E402
from tritonseek.kernels.mla_absorb import mla_absorb_o, mla_absorb_q  # noqa: E402
from tritonseek.kernels.reference.mla_absorb import mla_absorb_o_ref, mla_absorb_q_ref  # noqa: E402

H, NOPE, KV_LORA, ROPE, V_DIM, LAYERS = 128, 128, 512, 64, 128, 6


def main() -> int:
    p = argparse.ArgumentParser(description="absorbed MLA decode products vs torch einsum (see the module docstring)")
    p.add_argument("--tokens", default=(1, 8, 32), type=positive_int_list, help="comma list of token counts T")
    p.add_argument("--out", default="mla_absorb_rows.jsonl", type=out_file,
                   help="JSON rows, written when every case is done (a failed run keeps the old file)")
    args = p.parse_args()
    require_cuda("bench_mla_absorb")
    dev, bf = torch.device("cuda"), torch.bfloat16
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    w_uk = [torch.randn(H, NOPE, KV_LORA, device=dev, dtype=bf) * 0.05 for _ in range(LAYERS)]
    w_uv = [torch.randn(H, V_DIM, KV_LORA, device=dev, dtype=bf) * 0.05 for _ in range(LAYERS)]
    rows = []
    for T in args.tokens:
        q = torch.randn(T, H, NOPE + ROPE, device=dev, dtype=bf)
        q_nope, q_pe = q[..., :NOPE], torch.randn(T, H, ROPE, device=dev, dtype=bf)
        o_lat = torch.randn(T, H, KV_LORA, device=dev, dtype=bf)
        qa = torch.full((T, H, KV_LORA + ROPE), float("nan"), device=dev, dtype=bf)
        o = torch.full((T, H, V_DIM), float("nan"), device=dev, dtype=bf)
        # correctness at this shape first (every layer's weights)
        for i in range(LAYERS):
            mla_absorb_q(q_nope, w_uk[i], q_pe, out=qa)
            mla_absorb_o(o_lat, w_uv[i], out=o)
            for got, ref in ((qa, mla_absorb_q_ref(q_nope, w_uk[i], q_pe)), (o, mla_absorb_o_ref(o_lat, w_uv[i]))):
                err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
                assert not torch.isnan(got).any() and err < 1e-2, f"T={T} layer {i}: rel err {err}"
        cases = {
            "absorb_q": ([lambda w=w: mla_absorb_q(q_nope, w, q_pe, out=qa) for w in w_uk],
                         [lambda w=w: torch.cat([torch.einsum("thd,hdc->thc", q_nope, w), q_pe], dim=-1) for w in w_uk],
                         H * NOPE * KV_LORA * 2 + T * H * (NOPE + ROPE) * 2 + T * H * (KV_LORA + ROPE) * 2),
            "absorb_o": ([lambda w=w: mla_absorb_o(o_lat, w, out=o) for w in w_uv],
                         [lambda w=w: torch.einsum("thc,hdc->thd", o_lat, w) for w in w_uv],
                         H * V_DIM * KV_LORA * 2 + T * H * KV_LORA * 2 + T * H * V_DIM * 2),
        }
        for op, (ours, peer, nbytes) in cases.items():
            ug, pg = graph_replay_us(ours, 20.0), graph_replay_us(peer, 20.0)
            row = dict(suite="mla_absorb", case=dict(op=op, T=T, H=H), us=round(eager_time_us(ours, rep_ms=30), 2), us_graph=round(ug, 2),
                       tflops=round(2 * T * H * NOPE * KV_LORA / ug / 1e6, 2), gbps=round(nbytes / ug / 1e3, 1),
                       peer="torch einsum bf16" + (" + cat" if op == "absorb_q" else ""), peer_us=round(pg, 2),
                       ratio_vs_peer=round(pg / ug, 3), **env)
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_rows(args.out, rows)
    print("\n%-9s %4s %9s %9s %8s %7s" % ("op", "T", "us_graph", "torch_us", "GB/s", "ratio"))
    for r in rows:
        print("%-9s %4d %9.2f %9.2f %8.1f %7.3f" % (r["case"]["op"], r["case"]["T"], r["us_graph"], r["peer_us"], r["gbps"],
                                                 r["ratio_vs_peer"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
