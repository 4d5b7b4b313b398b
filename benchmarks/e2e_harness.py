"""Plumbing shared by the end-to-end suites (``bench_e2e.py``, ``mtp_e2e.py``): the ``Bench`` row sink
with its timers and time budget, and ``SliceHarness`` (a model plus one big random latent cache with
scattered pages, handing out sequences already at a given context)."""

from __future__ import annotations

if __name__ == "__main__":  # a module of other scripts, not a benchmark of its own (it printed nothing, exit 0)
    import sys

    print("e2e_harness.py holds the Bench row sink and SliceHarness of bench_e2e.py / bench_e2e_tp.py / mtp_e2e.py: "
          "run one of those, e.g.  PYTHONPATH=. python benchmarks/bench_e2e.py --help")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import datetime
import os
import statistics
import time

import torch

from tritonseek.benchrun import write_rows
from tritonseek.engine.cuda_graph import DecodeGraphs
from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.engine.runner import ModelRunner, Sequence
from tritonseek.engine.sampling_params import SamplingParams

PAGE = 64


class Bench:
    """Device, timers, row sink and time budget shared by the suites."""

    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.model = None  # set once built: rows record the backend that produced them
        # a smoke run (tiny widths or no GPU): its figures say nothing about the V3 model on the H200; each row
        # carries it unless the suite sets its own (the default model's rows on CUDA are real even with --tiny)
        self.dry = bool(getattr(args, "tiny", False)) or not self.cuda
        self.env = dict(
            gpu=torch.cuda.get_device_name() if self.cuda else "cpu", torch=torch.__version__,
            triton=_triton_version(), commit=os.environ.get("TRITONSEEK_COMMIT", args.commit),
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over_budget(self, what: str) -> bool:
        if self.elapsed() > self.args.budget_s:
            self.skipped.append(what)
            print(f"[budget] {self.elapsed():.0f}s > {self.args.budget_s}s: skipping {what}", flush=True)
            return True
        return False

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def kernel_us(self, fn) -> float:
        """Median µs of fn: triton.testing.do_bench on CUDA (L2 flushed between calls), perf_counter on CPU."""
        if self.cuda:
            import triton

            return triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median") * 1000.0
        return self.wall_us(fn, reps=3)

    def wall_us(self, fn, reps: int = 10, warmup: int = 2) -> float:
        """Median wall-clock µs of fn including its host work, synchronized after each call."""
        for _ in range(warmup):
            fn()
        self.sync()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            self.sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e6

    def peak_gb(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 1e9, 2) if self.cuda else None

    def reset_peak(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def row(self, suite: str, case: dict, **fields) -> dict:
        r = {"suite": suite, "case": case, "us": None, "tflops": None, "gbps": None, "peer": None,
             "peer_us": None, "ratio_vs_peer": None}
        r.update(fields)
        r.update(self.env)
        r.setdefault("dry", self.dry)
        r.setdefault("backend", self.model.ops.backend if self.model is not None else self.args.backend)
        self.rows.append(r)
        self.flush()
        return r

    def flush(self):
        """(Re)write every row so far to --out: rows are updated in place when a peer is added later. The file is
        replaced atomically (benchrun.write_rows), never emptied before a row exists."""
        if self.args.out:
            write_rows(self.args.out, self.rows)

    def find(self, suite: str, case: dict) -> dict | None:
        return next((r for r in self.rows if r["suite"] == suite and r["case"] == case and not r.get("error")), None)


def _triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except Exception:  # noqa: BLE001
        return "none"


def _r(x, nd=2):
    return None if x is None else round(float(x), nd)


class SliceHarness:
    """The slice plus one big random latent cache and a runner; hands out sequences at a given context."""

    def __init__(self, bench: Bench, model, max_tokens: int, seed: int = 1, max_context: int = 0,
                 max_batch: int = 0):
        cfg = model.cfg
        self.bench, self.model, self.cfg = bench, model, cfg
        blocks = max_tokens // PAGE + 64
        self.cache = PagedLatentCache(model.num_cache_layers, blocks, PAGE, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                                      model.dtype, bench.dev)
        gen = torch.Generator(device=bench.dev)
        gen.manual_seed(seed)
        for t in self.cache.layers:  # random latents: the attention reads real-looking data, never zeros
            t.normal_(0.0, 1.0, generator=gen)
        perm = torch.randperm(blocks, generator=torch.Generator().manual_seed(seed)).tolist()
        self.cache.allocator._free = perm  # scattered pages (the allocator pops from the end)
        self.graphs = None
        self.audited = False
        if bench.cuda and model.ops.is_triton and not bench.args.eager and max_batch:
            self.graphs = DecodeGraphs(model, self.cache, -(-(max_context + 8) // PAGE) + 1, max_batch)
        self.runner = ModelRunner(model, self.cache, bench.dev, self.graphs)
        self.eager_runner = ModelRunner(model, self.cache, bench.dev)
        self._next = 0
        self._prompts: dict[int, list[int]] = {}

    def close(self) -> None:
        """Drop the graphs and the cache (frees their device memory once the harness is unreferenced)."""
        if self.graphs is not None:
            self.graphs.close()
        self.graphs = self.runner = self.eager_runner = None
        self.cache.layers.clear()

    def seqs(self, batch: int, context: int, extra: int) -> list[Sequence]:
        """``batch`` sequences with ``context`` tokens already cached and one pending token, room for ``extra`` more."""
        prompt = self._prompts.setdefault(context, [2] * context)  # ids are never read: the cache is pre-filled
        out = []
        g = torch.Generator().manual_seed(context * 1000 + batch)
        toks = torch.randint(2, self.cfg.vocab_size, (batch,), generator=g).tolist()
        try:
            for i in range(batch):
                s = Sequence(self._next, "", prompt, SamplingParams(max_new_tokens=1 << 20), None)
                s.out_ids.append(toks[i])
                self._next += 1
                out.append(s)
                self.cache.ensure_capacity(s.seq_id, context + extra)
        except Exception:
            self.release(out)  # a failed case must not leak its pages into the next one
            raise
        return out

    def release(self, seqs):
        for s in seqs:
            self.cache.release(s.seq_id)
