"""A/B of the V3-slice decode step: bench_e2e's suites with this session's decode paths on or off.

    PYTHONPATH=. python benchmarks/bench_decode_ab.py --variant current|baseline [bench_e2e args ...]

``current``: the code as committed. ``baseline``: the same commit with the small-M (M ≤ 16) FP8
GEMMs sent through the general kernel (``fp8_gemm.SMALL_M_MAX`` = 0: the path before the swap-AB
kernel) and the absorbed MLA products through the torch einsum (+ cat) the model used
before ``tritonseek.kernels.mla_absorb``. Each variant runs in its own process (one slice in
memory); every row carries ``variant``. Everything else is bench_e2e.py unchanged.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_e2e, e2e_harness  # noqa: E402
from tritonseek.kernels import fp8_gemm  # noqa: E402
from tritonseek.model.ops import Ops  # noqa: E402


def _einsum_absorb_q(self, q_nope, w_uk, q_pe, out_dtype):
    return torch.cat([torch.einsum("thd,hdc->thc", q_nope, w_uk), q_pe], dim=-1).to(out_dtype)


def _einsum_absorb_o(self, o_lat, w_uv):
    return torch.einsum("thc,hdc->thd", o_lat, w_uv)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in ("current", "baseline"):
        print(__doc__)
        return 2
    variant, rest = argv[1], argv[2:]
    if variant == "baseline":
        fp8_gemm.SMALL_M_MAX = 0
        if hasattr(Ops, "mla_absorb_q"):
            Ops.mla_absorb_q, Ops.mla_absorb_o = _einsum_absorb_q, _einsum_absorb_o
    row = e2e_harness.Bench.row

    def tagged_row(self, suite, case, **fields):
        return row(self, suite, case, variant=variant, **fields)

    e2e_harness.Bench.row = tagged_row
    print(f"[decode A/B] variant={variant}: swap-AB for M <= {fp8_gemm.SMALL_M_MAX}, "
          f"absorb via {'torch einsum' if variant == 'baseline' else 'Ops (triton kernels)'}", flush=True)
    bench_e2e.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
