"""H200 smoke test of one mla_prefill_ws variant, in its own process (a hung pipeline is killed by the caller's
timeout without taking the other variants with it): a ragged batch (lengths 1, 37, 129, 300, 1000; 128 heads) and an
8192-token prompt, out poisoned with NaN, against the fp32 reference on 8 heads (‖out − ref‖/‖ref‖ ≤ 1e-2, no NaN).
Run: PYTHONPATH=. python benchmarks/probe_prefill_smoke.py BLOCK_N STAGES PIPE(0/1); prints one line, rc 0 if correct.
"""

from __future__ import annotations

import sys

if __name__ != "__main__":
    raise ImportError("probe_prefill_smoke.py is a script")

import time

import torch

from tritonseek.kernels import mla_prefill as P
from tritonseek.kernels.reference.mla import mla_prefill_ref

bn, stages, pipe = int(sys.argv[1]), int(sys.argv[2]), bool(int(sys.argv[3]))
cfg = dict(GLUON=True, WS_BLOCK_N=bn, WS_STAGES=stages, PIPE=pipe)
ok_all = True
for lens in ([1, 37, 129, 300, 1000], [8192]):
    t = time.time()
    total = sum(lens)
    q = torch.randn(total, 128, 192, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(total, 128, 192, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(total, 128, 128, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    o = torch.full((total, 128, 128), float("nan"), device="cuda", dtype=torch.bfloat16)
    P.mla_prefill(q, k, v, cu, max(lens), 192**-0.5, out=o, config=cfg)
    torch.cuda.synchronize()
    ref = mla_prefill_ref(q[:, :8].float(), k[:, :8].float(), v[:, :8].float(), cu, 192**-0.5)
    rel = ((o[:, :8].float() - ref).norm() / ref.norm()).item()
    nan = bool(torch.isnan(o).any().item())
    ok = rel <= 1e-2 and not nan
    ok_all &= ok
    print(f"smoke bn{bn} st{stages} pipe{int(pipe)} lens {lens if len(lens) < 6 else len(lens)}: rel {rel:.2e} "
          f"nan {nan} ok {ok} ({time.time() - t:.1f}s)", flush=True)
sys.exit(0 if ok_all else 1)
