#!/usr/bin/env bash
# h3moe s19 W4 (issue 5) — OPTIONAL, <= 100 s (W3 used 40 s of its 150): EARLY_TMA in its fixed form (W2's hang was
# a Triton 3.6 Gluon frontend drop of a loop-carried variable, see grouped_gemm_ws_parts). Every step under its own
# timeout, EARLY first checked at edge shapes (a hang costs at most 40 s). (1) EARLY_TMA vs default bitwise (+ the
# default vs the fp32 reference) at edge shapes: K blocks < stages, masked_m with 0 / 1 / partial tiles, several
# tiles per program, all-empty, graph replay with new masked_m; (2) probe: interleaved GPU-clock A/B (60 rounds,
# A/A) + EARLY timeline at 1x1024 (4096,7168) / (7168,2048), 2x512 (7168,2048), 4x256 (4096,7168).
set -u
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
timeout 40 python - <<'PY'
import torch
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_masked_ws as F
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref as R
dev = "cuda"
g = torch.Generator(device=dev).manual_seed(7)
def fp8(shape):
    b = torch.randint(0, 256, shape, generator=g, device=dev, dtype=torch.uint8)
    b[(b & 0x7F) == 0x7F] = 0x38
    return b.view(torch.float8_e4m3fn)
ok = True
for E, M, N, K, mmv in [(3, 130, 200, 384, [130, 127, 124]), (4, 64, 256, 128, [0, 64, 1, 0]), (8, 256, 4096, 1024, None),
                        (2, 256, 4096, 7168, [256, 200]), (5, 128, 512, 512, [0, 0, 0, 0, 0]), (1, 1024, 7168, 2048, [1024])]:
    mm = torch.tensor(mmv, dtype=torch.int32, device=dev) if mmv else torch.randint(0, M + 1, (E,), generator=g, device=dev, dtype=torch.int32)
    a, b = fp8((E, M, K)), fp8((E, N, K))
    a_s = torch.rand(E, M, K // 128, generator=g, device=dev) + 0.25
    bs = torch.rand(E, -(-N // 128), K // 128, generator=g, device=dev) + 0.25
    outs = []
    for cfg in (None, {"EARLY_TMA": True}):
        o = torch.full((E, M, N), float("nan"), dtype=torch.bfloat16, device=dev)
        F(a, a_s, b, bs, mm, out=o, config=cfg)
        torch.cuda.synchronize()
        outs.append(o)
    valid = torch.arange(M, device=dev)[None, :] < mm[:, None]
    d = calc_diff(outs[0].float()[valid], R(a, a_s, b, bs, mm, out_dtype=torch.float32)[valid]) if valid.any() else 0.0
    same = torch.equal(torch.nan_to_num(outs[0].float(), 7.0), torch.nan_to_num(outs[1].float(), 7.0))
    print(f"edge E={E} M={M} N={N} K={K} masked_m={mm.tolist()[:8]}: default calc_diff {d:.2e}, EARLY bitwise equal {same}", flush=True)
    ok &= same and d < 1e-3
# graph replay with new masked_m values (no host sync inside)
E, M, N, K = 8, 64, 256, 512
a, b = fp8((E, M, K)), fp8((E, N, K))
a_s = torch.rand(E, M, K // 128, generator=g, device=dev) + 0.25
bs = torch.rand(E, 2, K // 128, generator=g, device=dev) + 0.25
mm = torch.zeros(E, dtype=torch.int32, device=dev)
o = torch.zeros(E, M, N, dtype=torch.bfloat16, device=dev)
F(a, a_s, b, bs, mm, out=o, config={"EARLY_TMA": True})
gr = torch.cuda.CUDAGraph()
with torch.cuda.graph(gr):
    F(a, a_s, b, bs, mm, out=o, config={"EARLY_TMA": True})
for vals in ([1, 0, 64, 3, 0, 0, 17, 64], [0] * 8, [64] * 8):
    mm.copy_(torch.tensor(vals, dtype=torch.int32))
    o.fill_(float("nan"))
    gr.replay()
    torch.cuda.synchronize()
    valid = torch.arange(M, device=dev)[None, :] < mm[:, None]
    r = R(a, a_s, b, bs, mm, out_dtype=torch.float32)
    good = bool(torch.isnan(o.float()[~valid]).all()) and (not valid.any() or calc_diff(o.float()[valid], r[valid]) < 1e-3)
    print(f"graph replay masked_m={vals}: {'ok' if good else 'WRONG'}", flush=True)
    ok &= good
print("EARLY_TMA edge checks:", "ALL OK" if ok else "FAILED", flush=True)
PY
echo "edge rc=$?"
timeout 50 python benchmarks/probe_grouped_ws_timeline.py --out "$OUT" --reps 5 --ab 60 \
  --cases 1x1024@4096x7168 1x1024@7168x2048 2x512@7168x2048 4x256@4096x7168 \
  --ab-cfgs '{"EARLY_TMA": true}' --timeline-cfgs '{"EARLY_TMA": true}'
echo "probe rc=$?"
