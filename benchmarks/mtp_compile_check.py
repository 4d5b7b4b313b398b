"""sm_90a compile check of every kernel variant of the sampling / verification kernels (no GPU needed).

    PYTHONPATH=. python benchmarks/bench_mtp.py --compile-check     (run WITHOUT TRITON_INTERPRET)
    python benchmarks/mtp_compile_check.py [--no-ptxas-report]       (the same; exit 1 when a variant fails)

Split out of bench_mtp.py (which forwards ``--compile-check`` here); used by
tests/kernels/test_spec_verify.py::test_kernels_compile_for_sm90.
"""

from __future__ import annotations

import argparse
import os
import sys

import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script: tritonseek

from tritonseek.kernels import sampling as S  # noqa: E402
from tritonseek.kernels import sampling_filter as F  # noqa: E402
from tritonseek.kernels import sampling_radix as R  # noqa: E402


def compile_check(ptxas_report: bool = True) -> int:
    """Compile every kernel variant for sm_90a with ptxas (no GPU needed; run WITHOUT TRITON_INTERPRET).

    Catches what the interpreter lets through (loop-carried type changes, constexpr misuse) and
    prints registers/spills per variant (``ptxas -v``, ~0.3 s a variant; ptxas_report=False skips it: the
    compile itself already ran ptxas for the cubin, or found the cubin of the same PTX in Triton's cache).
    Returns the number of variants that failed.
    """
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tritonseek.kernels import spec_verify as SV

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    failures = 0

    def comp(fn, sig: dict, consts: dict, warps: int, div: tuple = ()) -> None:
        nonlocal failures
        names = list(sig) + list(consts)
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div}  # as the launcher specializes
        src = ASTSource(fn, {**sig, **{k: "constexpr" for k in consts}}, consts, attrs)
        try:
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
        except Exception as e:  # noqa: BLE001 - report every failing variant
            failures += 1
            print(f"FAIL {fn.__name__} {consts}: {type(e).__name__}: {str(e)[-800:]}", flush=True)
            return
        reports.append(pool.submit(report, f"ok   {fn.__name__} {consts} warps={warps} | ", k.asm["ptx"]))

    def report(head: str, ptx: str) -> str:  # ptxas -v (registers, spills) in a worker thread, beside the compiles
        info = ""
        if ptxas_report and os.path.exists(ptxas):
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(ptx)
            r = subprocess.run([ptxas, "--gpu-name", "sm_90a", "-v", f.name, "-o", os.devnull],
                               capture_output=True, text=True)
            os.unlink(f.name)
            info = " ".join(re.sub(r".*ptxas info\s*:\s*", "", ln) for ln in r.stderr.splitlines()
                            if "Used" in ln or "spill" in ln)
        return head + info

    from concurrent.futures import ThreadPoolExecutor

    pool, reports = ThreadPoolExecutor(2), []

    fp, i32, i64p = "*fp32", "i32", "*i64"
    stats = dict(logits_ptr=fp, noise_ptr=fp, seeds_ptr=i64p, draft_ptr=i64p, temperature_ptr=fp, thresh_ptr=fp,
                 done_ptr="*i32", part_max_ptr=fp, part_sum_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp, part_ridx_ptr="*i32",
                 V=i32, NJ=i32, split_len=i32, num_splits=i32, stride_lb=i32, stride_lj=i32, stride_nb=i32,
                 stride_nj=i32, stride_db=i32)
    div = ("logits_ptr", "noise_ptr", "V", "split_len", "stride_lb", "stride_lj", "stride_nb", "stride_nj")
    for greedy, thresh, need_sum, race, philox in [(True, False, False, 0, False), (False, False, False, 2, False),
                                                   (False, True, True, 1, False), (False, False, True, 1, True),
                                                   (False, True, True, 2, False), (False, False, False, 2, True)]:
        block, warps, _ = S.STATS_CONFIGS["greedy" if greedy else "sample"]
        if not greedy:  # the row-count configs too
            for rb, rw, _ in {c for _, c in S.STATS_CONFIGS_BY_ROWS["sample"]} - {S.STATS_CONFIGS["sample"]}:
                comp(S._row_stats_kernel, stats, dict(GREEDY=greedy, HAS_THRESH=thresh, HAS_DONE=thresh,
                                                      NEED_SUM=need_sum, RACE_MODE=race, PHILOX=philox, BLOCK=rb),
                     rw, div)
        comp(S._row_stats_kernel, stats, dict(GREEDY=greedy, HAS_THRESH=thresh, HAS_DONE=thresh, NEED_SUM=need_sum,
                                              RACE_MODE=race,
                                              PHILOX=philox, BLOCK=block), warps, div)
    thr = dict(logits_ptr=fp, temperature_ptr=fp, top_k_ptr="*i32", top_p_ptr=fp, thresh_ptr=fp, need_ptr="*i32",
               V=i32, NJ=i32, stride_lb=i32, stride_lj=i32)
    for hk, hp in [(True, True), (True, False), (False, True)]:
        comp(R._topk_topp_threshold_kernel, thr, dict(HAS_TOP_K=hk, HAS_TOP_P=hp, BLOCK=R.THRESH_CONFIG[0]),
             R.THRESH_CONFIG[1])
    fblock, fwarps, _ = F.FILTER_CONFIG
    fdiv = ("logits_ptr", "V", "split_len", "stride_lb", "stride_lj")
    common = dict(logits_ptr=fp, temperature_ptr=fp, top_k_ptr="*i32", top_p_ptr=fp)
    shape = dict(V=i32, NJ=i32, split_len=i32, num_splits=i32, stride_lb=i32, stride_lj=i32)
    for hk, hp in [(True, True), (False, True), (True, False)]:
        flags = dict(HAS_TOP_K=hk, HAS_TOP_P=hp)
        comp(F._filter_max_kernel, {**common, "part_m_ptr": fp, "part_l_ptr": fp, "sketch_ptr": fp, "V": i32,
                                    "NJ": i32, "split_len": i32, "num_splits": i32, "sketch_stride": i32,
                                    "stride_lb": i32, "stride_lj": i32},
             dict(**flags, G=1024, BLOCK=fblock), fwarps, fdiv)
        comp(F._filter_pivot_kernel, {"temperature_ptr": fp, "top_k_ptr": "*i32", "top_p_ptr": fp, "part_m_ptr": fp,
                                      "part_l_ptr": fp, "sketch_ptr": fp, "rowstat_ptr": fp, "pivot_ptr": "*i32",
                                      "V": i32, "num_splits": i32, "n_sketch": i32, "sketch_stride": i32, "NJ": i32},
             dict(**flags, SPLITS=128, SK=F.FILTER_SKETCH), F.SETTLE_WARPS)
        comp(F._filter_gather_kernel,
             {**common, "part_m_ptr": fp, "rowstat_ptr": fp, "pivot_ptr": "*i32", "cand_ptr": fp,
              "cidx_ptr": "*i32", "ccount_ptr": "*i32", **shape},
             dict(**flags, CAP=F.FILTER_CAP, BLOCK=F.GATHER_CONFIG[0]), F.GATHER_CONFIG[1], fdiv)
        for race, philox in ((1, hp), (2, not hp)):
            comp(F._filter_settle_kernel,
                 {"temperature_ptr": fp, "top_k_ptr": "*i32", "top_p_ptr": fp, "rowstat_ptr": fp, "pivot_ptr": "*i32",
                  "cand_ptr": fp, "cidx_ptr": "*i32",
                  "ccount_ptr": "*i32", "thresh_ptr": fp, "need_ptr": "*i32", "logits_ptr": fp, "noise_ptr": fp,
                  "seeds_ptr": i64p, "draft_ptr": i64p, "part_max_ptr": fp, "part_sum_ptr": fp, "part_idx_ptr": "*i32",
                  "part_race_ptr": fp, "part_ridx_ptr": "*i32", "V": i32, "NJ": i32, "stride_lb": i32,
                  "stride_lj": i32, "stride_nb": i32, "stride_nj": i32, "stride_db": i32, "stats_splits": i32},
                 dict(**flags, CAP=F.FILTER_CAP, SMALL=F.FILTER_SMALL, STATS=True, NEED_SUM=race == 1,
                      RACE_MODE=race, PHILOX=philox), F.SETTLE_WARPS)
    comp(S._sample_combine_kernel, dict(temperature_ptr=fp, part_max_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp,
                                        part_ridx_ptr="*i32", out_ptr=i64p, num_splits=i32), dict(SPLITS=128), 1)
    comp(S._sample_combine_kernel, dict(temperature_ptr=fp, part_max_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp,
                                        part_ridx_ptr="*i32", out_ptr=i64p, num_splits=i32),
         dict(SPLITS=128, GREEDY=True), 1)
    comp(S._philox_noise_kernel, dict(seeds_ptr=i64p, out_ptr=fp, V=i32, NJ=i32), dict(BLOCK=1024), 4)
    greedy = dict(logits_ptr=fp, draft_ptr=i64p, part_max_ptr=fp, part_idx_ptr="*i32", count_ptr="*i32",
                  out_ptr=i64p, num_acc_ptr="*i32", V=i32, split_len=i32, num_splits=i32, stride_lb=i32,
                  stride_lj=i32, stride_db=i32, stride_ob=i32)
    for block, warps, _, unroll in {SV.GREEDY_CONFIG, *(c for _, c in SV.GREEDY_CONFIG_BY_ROWS)}:
        for K in (1, 3):
            comp(SV._greedy_verify_kernel, greedy, dict(K=K, KP=triton.next_power_of_2(K + 1), SPLITS=128,
                                                        BLOCK=block, UNROLL=unroll), warps,
                 ("logits_ptr", "V", "split_len", "stride_lb", "stride_lj"))
    comb = dict(draft_ptr=i64p, draft_probs_ptr=fp, logits_ptr=fp, temperature_ptr=fp, thresh_ptr=fp, uniforms_ptr=fp,
                part_max_ptr=fp, part_sum_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp, part_ridx_ptr="*i32",
                out_ptr=i64p, num_acc_ptr="*i32", V=i32, num_splits=i32, stride_db=i32, stride_qb=i32,
                stride_qj=i32, stride_lb=i32, stride_lj=i32, stride_ub=i32, stride_ob=i32)
    for K, greedy, one_hot, thresh_on in [(1, True, True, False), (4, True, True, False), (3, False, True, True),
                                          (4, False, False, False), (1, False, True, False)]:
        comp(SV._verify_combine_kernel, comb, dict(K=K, GREEDY=greedy, ONE_HOT=one_hot, HAS_THRESH=thresh_on,
                                                   SPLITS=128), 1)
    res = dict(logits_ptr=fp, noise_ptr=fp, seeds_ptr=i64p, draft_probs_ptr=fp, temperature_ptr=fp, thresh_ptr=fp,
               part_max_ptr=fp, part_sum_ptr=fp, part_idx_ptr="*i32", part_race_ptr=fp, part_ridx_ptr="*i32",
               V=i32, K=i32, split_len=i32, num_splits=i32, stride_lb=i32, stride_lj=i32, stride_nb=i32,
               stride_nj=i32, stride_qb=i32, stride_qj=i32)
    sample_cfgs = {S.STATS_CONFIGS["sample"], *(c for _, c in S.STATS_CONFIGS_BY_ROWS["sample"])}
    for (thresh_on, philox), (block, warps, _) in [(v, c) for v in [(False, False), (True, True)] for c in sample_cfgs]:
        comp(SV._residual_race_kernel, res, dict(HAS_THRESH=thresh_on, PHILOX=philox, SPLITS=128, BLOCK=block),
             warps, div)
    for r in reports:
        print(r.result(), flush=True)
    pool.shutdown()
    print(f"compile check: {failures} failure(s)", flush=True)
    return failures


def main(argv=None) -> int:
    """Command line (it had none: run as a script it imported the kernels and printed nothing). Returns the exit
    status: 0 when every variant compiled, 1 otherwise; 2 (argparse) under the interpreter, which cannot compile."""
    from tritonseek.kernels._utils import interpreter_active

    p = argparse.ArgumentParser(prog="mtp_compile_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--no-ptxas-report", action="store_true",
                   help="skip the per-variant ptxas -v registers/spills lines (faster)")
    args = p.parse_args(argv)
    if interpreter_active():
        p.error("Triton's interpreter is on (TRITON_INTERPRET=1) and compiles nothing: "
                "run without it")
    return 1 if compile_check(ptxas_report=not args.no_ptxas_report) else 0


if __name__ == "__main__":
    sys.exit(main())
