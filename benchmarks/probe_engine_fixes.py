"""H200 check of two engine fixes of session 24 (h3tester findings), on the embedded default model, triton backend.

1. Re-entry in CUDA-graph mode (#4): a ``generate`` called from the running call's ``on_text`` (and from another
   thread) must leave the running call's tokens equal to its sequential run. The old behaviour (every call takes
   the kept cache) is reproduced by replacing the LLM's lock with one that always grants it: that is the control
   showing the bug on the GPU (the tester could only simulate it on CPU).
2. Seeded sampled MTP (#2): per-prompt tokens of a batch vs single runs vs the reversed batch (``step_plan``: one
   masked verify batch per step), mtp = 1 and 2; greedy MTP identity.
3. Time of one sampled MTP ``generate`` (16 prompts, mtp = 1 / 3, 64 new tokens), twice per round (A/A),
   interleaved rounds; decode steps counted.
The s24 rows of W1 (614bcf7) and W2 (5d60a18) also timed the variants measured then and removed since: one batch per
draft count (draft_groups) and the old one-K rule (git show 5d60a18:benchmarks/probe_engine_fixes.py).

Usage: python benchmarks/probe_engine_fixes.py --out rows.jsonl [--rounds 7]. Prints a short table last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import threading
import time

import torch

from tritonseek.benchrun import git_commit
from tritonseek import LLM, SamplingParams

PROMPTS = ["def add(a, b):", "import os", "class Foo:", "for i in range(", "x = [", "def main():", "while True:",
           "import sys", "# compute", "return", "if x:", "try:", "with open(", "print(", "def f(x):", "y = 2"]


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class AlwaysGranted:
    """Stands in for LLM._kept_lock: every call gets the kept cache (the behaviour before the fix)."""

    def acquire(self, blocking=True):
        return True

    def release(self):
        pass


def ids(outs):
    return [o.token_ids for o in outs]


def reentry(llm, rows, control: bool):
    real = llm._kept_lock
    if control:
        llm._kept_lock = AlwaysGranted()
    try:
        sp, inner_sp = SamplingParams(max_new_tokens=24), SamplingParams(max_new_tokens=6)
        base = ids(llm.generate(PROMPTS[:2], sp))
        alone = llm.generate(["class Foo:"], inner_sp)[0].token_ids
        inner = []

        def nested(i, d):
            if len(inner) < 2:
                inner.append(llm.generate(["class Foo:"], inner_sp)[0].token_ids)

        got = ids(llm.generate(PROMPTS[:2], sp, on_text=nested))
        graph_steps = llm.last_stats.extra.get("graph_steps")
        other = {}

        def worker():
            other["ids"] = llm.generate(["class Foo:"], inner_sp)[0].token_ids

        def threaded(i, d):
            if "t" not in other:
                other["t"] = t = threading.Thread(target=worker)
                t.start()
                t.join()

        got_t = ids(llm.generate(PROMPTS[:2], sp, on_text=threaded))
        after = ids(llm.generate(PROMPTS[:2], sp))
        row = dict(case="reentry", control_old_behaviour=control, outer_equal=got == base,
                   inner_equal=inner == [alone, alone], thread_outer_equal=got_t == base,
                   thread_inner_equal=other.get("ids") == alone, later_call_equal=after == base,
                   outer_graph_steps=graph_steps)
    finally:
        llm._kept_lock = real
    rows.append(row)
    print(row, flush=True)


def invariance(llm, rows, rule_name="step_plan"):
    sp = SamplingParams(temperature=0.8, seed=5, max_new_tokens=30)
    for mtp in (1, 2):
        single = [llm.generate([p], sp, mtp=mtp)[0].token_ids for p in PROMPTS[:3]]
        batch = ids(llm.generate(PROMPTS[:3], sp, mtp=mtp))
        rev = ids(llm.generate(PROMPTS[:3][::-1], sp, mtp=mtp))[::-1]
        row = dict(case="seeded_mtp_batch_invariance", rule=rule_name, mtp=mtp,
                   batch_eq_single=[a == b for a, b in zip(batch, single)],
                   reversed_eq_single=[a == b for a, b in zip(rev, single)])
        rows.append(row)
        print(row, flush=True)
    greedy = SamplingParams(max_new_tokens=30)
    plain = ids(llm.generate(PROMPTS[:4], greedy))
    row = dict(case="greedy_mtp_identical", rule=rule_name,
               equal=[ids(llm.generate(PROMPTS[:4], greedy, mtp=k)) == plain for k in (1, 2, 3)])
    rows.append(row)
    print(row, flush=True)


def timing(llm, rows, rounds: int):
    names = ["a", "a_aa"]
    params = [SamplingParams(temperature=0.8, top_p=0.95, seed=i, max_new_tokens=64) for i in range(len(PROMPTS))]
    for mtp in (1, 3):
        llm.generate(PROMPTS, params, mtp=mtp)  # compile / capture outside the timed rounds
        times = {v: [] for v in names}
        steps = {}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for v in order:
                _sync()
                t0 = time.perf_counter()
                llm.generate(PROMPTS, params, mtp=mtp)
                _sync()
                times[v].append(time.perf_counter() - t0)
                steps[v] = llm.last_stats.decode_steps
        med = {v: statistics.median(t) for v, t in times.items()}
        row = dict(case="sampled_mtp_generate_time", mtp=mtp, batch=len(PROMPTS), max_new_tokens=64, rounds=rounds,
                   median_ms={v: round(m * 1e3, 2) for v, m in med.items()},
                   min_ms={v: round(min(t) * 1e3, 2) for v, t in times.items()},
                   ratio_aa=round(med["a_aa"] / med["a"], 3), decode_steps=steps)
        rows.append(row)
        print(row, flush=True)


class Rows(list):
    """The result rows, each also appended to the jsonl file at once (a job killed at its time limit keeps them)."""

    def __init__(self, path, meta):
        super().__init__()
        self.path, self.meta = path, meta
        open(path, "w").close()

    def append(self, row):
        super().append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps({**self.meta, **row}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script (no graphs, reference backend)")
    a = ap.parse_args()
    meta = dict(gpu=torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", commit=git_commit(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                bench="probe_engine_fixes")
    t0 = time.perf_counter()
    llm = LLM(device=a.device)
    assert llm.uses_cuda_graphs or a.device == "cpu"
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = Rows(a.out, meta)
    try:
        reentry(llm, rows, control=False)
        invariance(llm, rows)
        timing(llm, rows, a.rounds)
        reentry(llm, rows, control=True)  # last: the old behaviour's nested call resets the cache under the outer one
    finally:
        print(f"wall {time.perf_counter() - t0:.1f} s", flush=True)
    print("\ncase | key figures")
    for r in rows:
        skip = set(meta) | {"case"}
        print(r["case"], "|", {k: v for k, v in r.items() if k not in skip})


if __name__ == "__main__":
    main()
