"""One CUDA graph per (batch bucket, K) for the whole device side of a greedy MTP speculative step.

The step-by-step path (:class:`~tritonseek.engine.speculative.MTPDrafter`: K−1 draft replays, a verify
replay, an eager verification kernel, ``.tolist()`` of its outputs, an MTP-pass replay, clones and index
gathers) costs ~0.7 ms of mostly host time per step on the tiny default model, whose plain decode step is
one graph replay of ~0.14 ms. Here one replay runs, for every live sequence with n+1 accepted tokens
(t_n not yet in the target cache):

1. drafts: d_1 = the carried first draft; d_{j+1} = argmax head(MTP(d_j, h, position n+j−1)) for j < K
   (MTP latent cache written at n+j−1, cache_seqlens n+j);
2. verify: target forward over [t_n, d_1 … d_K] at positions n … n+K (seqlen_q K+1, bottom-right causal),
   then greedy verification (``Ops.verify_greedy``; K = 0: the argmax) → out [b, K+1] padded −1, a;
3. MTP pass over the same positions with the target hiddens and out (−1 read as token 0: rows past n+a are
   computed, never used), output row n+a → the next step's h and first draft, and t_{n+a+1} = out[a];
4. results: out and a into one int64 row per sequence ``[out_0 … out_K, a]``; h, first draft and last token
   into the carried state (device buffers that the next replay reads: no clones, no host round trip).

The host then makes exactly one device→host copy per step (the result rows, non-blocking into pinned memory,
one event wait) and does the bookkeeping from it (tokens, EOS / stop / max_new_tokens, releasing finished
sequences). The only inputs it uploads are positions n … n+K, their cache slots, cache_seqlens n+K+1 and the
block table (one :class:`~tritonseek.engine.cuda_graph.StepBuffers` copy); pages for n+K+1 tokens are
allocated before the step; rejected positions are rolled back by lengths only. Rows of sequences that
finished are dropped from the carried state by one gather (only on steps where some sequence finished).
Dummy rows of a bucket (slot −1, cache_seqlens 0) write no cache row and read no key.

Used for greedy batches on CUDA with the triton backend (``ModelRunner.graph_step``); sampling batches and
CPU runs take the step-by-step path. Same tokens as plain greedy decoding (verification is exact).
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import torch

from tritonseek.engine.cuda_graph import StepBuffers
from tritonseek.engine.speculative import greedy_draft_tokens
from tritonseek.model.mla import AttentionBatch


class MTPStepGraphs:
    """Captured greedy MTP steps over a runner's cache, one graph per (batch bucket, K), K = 0 … MAX_K.

    Args:
        runner: a :class:`~tritonseek.engine.runner.ModelRunner` with :class:`DecodeGraphs` (its buckets, batch
            limit and block-table width are used; no reference to either is kept).
    Carried state (device, [max_batch] rows, row i = the i-th live sequence): ``h_last`` [max_batch, hidden]
    model dtype (MTP hidden at the last accepted position, pre ``shared_head.norm``), ``first`` [max_batch]
    int64 (its greedy draft), ``last`` [max_batch] int64 (the newest accepted token, not yet in the cache).
    Results: ``res`` [max_batch·(MAX_K+2)] int64, read as [b, K+2] rows ``out_0 … out_K, num_accepted``.
    Graphs are captured lazily into one pool; ``capture_s`` sums the capture time.
    """

    MAX_K = 4

    def __init__(self, runner):
        g, model = runner.graphs, runner.model
        self.model, self.cache, self.dev = model, runner.cache, g.device
        self.mtp = model.mtp[0]
        self.mtp_cache = runner.cache.layers[model.cfg.num_hidden_layers]
        self.num_heads = model.model.layers[0].self_attn.num_heads
        self.mtp_heads = self.mtp.block.self_attn.num_heads
        self.buckets, self.max_batch = tuple(g.buckets), g.max_batch
        mb, dev = g.max_batch, self.dev
        self.bufs = StepBuffers(mb, g.bufs.max_blocks, runner.cache.page_size, dev, self.MAX_K + 1)
        self.h_last = torch.zeros(mb, model.cfg.hidden_size, dtype=model.dtype, device=dev)
        self.first = torch.zeros(mb, dtype=torch.int64, device=dev)
        self.last = torch.zeros(mb, dtype=torch.int64, device=dev)
        self.res = torch.zeros(mb * (self.MAX_K + 2), dtype=torch.int64, device=dev)
        self.rows = torch.arange(mb, device=dev)
        pin = dev.type == "cuda"
        # host side of the one copy per step, and of the keep indices of a compaction
        self.res_host = torch.zeros(mb * (self.MAX_K + 2), dtype=torch.int64, pin_memory=pin)
        self.idx_host = torch.zeros(mb, dtype=torch.int64, pin_memory=pin)
        self.idx_dev = torch.zeros(mb, dtype=torch.int64, device=dev)
        self._done = torch.cuda.Event() if pin else None
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = None
        self.capture_s = 0.0
        self.replays = 0

    def bucket(self, batch: int) -> int:
        return next(b for b in self.buckets if b >= batch)

    def fits(self, batch: int) -> bool:
        return 1 <= batch <= self.max_batch

    def _forward(self, b: int, k: int) -> None:
        """The step's device work on the static buffers (what a replay runs)."""
        model, ops, mtp, bufs = self.model, self.model.ops, self.mtp, self.bufs
        q = k + 1
        n = b * q
        lens, bt = bufs.cache_seqlens[:b], bufs.block_table[:b]
        pos, slots = bufs.positions[:n], bufs.slot_mapping[:n]
        rows = self.rows[:b]
        drafts, h = [self.first[:b]], self.h_last[:b]
        if k >= 2:
            pos2, slot2, live = pos.view(b, q), slots.view(b, q), lens > 0
        for j in range(1, k):  # draft step j: MTP at position n+j−1 on d_j, cache_seqlens n+j (dummy rows 0)
            lj = torch.where(live, lens - (q - j), 0).to(torch.int32)
            bj = AttentionBatch(is_prefill=False, slot_mapping=slot2[:, j - 1].contiguous(), block_table=bt,
                                cache_seqlens=lj, seqlen_q=1, mla_metadata=ops.mla_metadata(lj, 1, self.mtp_heads))
            h = mtp(drafts[-1], h, pos2[:, j - 1].contiguous(), bj, self.mtp_cache)
            drafts.append(greedy_draft_tokens(mtp, ops, h))
        batch = AttentionBatch(is_prefill=False, slot_mapping=slots, block_table=bt, cache_seqlens=lens,
                               seqlen_q=q, mla_metadata=ops.mla_metadata(lens, q, self.num_heads))
        if k:
            d = torch.stack(drafts, dim=1)
            ids = torch.cat([self.last[:b, None], d], dim=1).reshape(-1)
        else:
            ids = self.last[:b]
        hidden, normed = model.forward_normed(ids, pos, batch, self.cache.layers)
        logits = model.lm_head(normed)
        if k:
            out, num_acc = ops.verify_greedy(d, logits.view(b, q, -1))
            num_acc = num_acc.to(torch.int64)
        else:
            out, num_acc = ops.argmax(logits)[:, None], torch.zeros(b, dtype=torch.int64, device=self.dev)
        # MTP pass: the MTP layer's batch has the same heads, lengths and slots as the verify forward
        h_all = mtp(out.clamp_min(0).reshape(-1), hidden, pos, batch, self.mtp_cache)
        h_new = h_all.view(b, q, -1)[rows, num_acc]
        first = greedy_draft_tokens(mtp, ops, h_new)
        res = self.res[: b * (q + 1)].view(b, q + 1)
        res[:, :q].copy_(out)
        res[:, q].copy_(num_acc)
        self.last[:b].copy_(out[rows, num_acc])
        self.first[:b].copy_(first)
        self.h_last[:b].copy_(h_new)

    def _capture(self, b: int, k: int) -> None:
        t0 = time.perf_counter()
        state = [t.clone() for t in (self.h_last, self.first, self.last)]
        side = torch.cuda.Stream(self.dev)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(side):  # compiles / allocates outside the capture; same cache writes as the replay
            self._forward(b, k)
        torch.cuda.current_stream(self.dev).wait_stream(side)
        for t, s in zip((self.h_last, self.first, self.last), state):
            t.copy_(s)  # the warm-up advanced the carried state: the replay must start from the same one
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._forward(b, k)
        self._pool = graph.pool()
        self._graphs[(b, k)] = graph
        self.capture_s += time.perf_counter() - t0

    def _replay(self, b: int, k: int) -> None:
        self._graphs[(b, k)].replay()

    @torch.inference_mode()
    def load(self, h_last: torch.Tensor, first: torch.Tensor, last_tokens: list[int]) -> None:
        """Carried state of the live sequences after prefill: h_last [B, H], first [B] (device), last tokens."""
        B = len(last_tokens)
        self.h_last[:B].copy_(h_last)
        self.first[:B].copy_(first)
        self.last[:B].copy_(torch.tensor(last_tokens, dtype=torch.int64), non_blocking=False)

    @torch.inference_mode()
    def keep(self, idx: list[int]) -> None:
        """Drop the carried rows of finished sequences: row i ← row idx[i] (no work when idx is 0 … len−1)."""
        m = len(idx)
        if m == 0 or idx[-1] == m - 1:  # idx is increasing: a prefix is kept as it is
            return
        self.idx_host[:m] = torch.as_tensor(idx, dtype=torch.int64)
        sel = self.idx_dev[:m]
        sel.copy_(self.idx_host[:m], non_blocking=self._done is not None)
        for t in (self.h_last, self.first, self.last):
            t[:m] = t.index_select(0, sel)
        if self._done is not None:
            self._done.record()  # idx_host is rewritten only after the next step's wait on this event

    @torch.inference_mode()
    def step(self, seqs, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One greedy MTP step of ``seqs`` (row i = carried state row i) with k drafts (0 … MAX_K).

        Allocates pages for n+k+1 tokens, uploads positions / slots / lengths / block table, replays the
        (bucket, k) graph, copies the result rows to the host (the one device→host copy and the one wait of the
        step). Returns (out [B, k+1] int64 padded −1, num_accepted [B] int64), host numpy views valid until the
        next step. Raises ValueError when B exceeds max_batch or k is outside 0 … MAX_K.
        """
        B, q = len(seqs), k + 1
        if not self.fits(B) or not 0 <= k <= self.MAX_K:
            raise ValueError(f"batch {B} / k {k} outside 1 … {self.max_batch} / 0 … {self.MAX_K}")
        b, cache = self.bucket(B), self.cache
        starts = [s.num_tokens - 1 for s in seqs]
        for s, p in zip(seqs, starts):
            cache.ensure_capacity(s.seq_id, p + q)
        blocks = cache.blocks
        self.bufs.fill([blocks[s.seq_id] for s in seqs], [s.seq_id for s in seqs], None, starts, b,
                       getattr(cache, "epoch", 0), q)
        if (b, k) not in self._graphs:
            self._capture(b, k)
        self._replay(b, k)
        self.replays += 1
        m = B * (q + 1)
        if self._done is not None:
            self.res_host[:m].copy_(self.res[:m], non_blocking=True)
            self._done.record()
            self._done.synchronize()
        else:
            self.res_host[:m].copy_(self.res[:m])
        r = self.res_host[:m].numpy().reshape(B, q + 1)
        return r[:, :q], r[:, q]


_STEP_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def step_graphs_for(runner) -> MTPStepGraphs:
    """The MTPStepGraphs of the runner's DecodeGraphs (made on first use, reused by later ``generate`` calls while
    the engine keeps those graphs and their cache)."""
    sg = _STEP_GRAPHS.get(runner.graphs)
    if sg is None or sg.cache is not runner.cache or sg.model is not runner.model:
        sg = _STEP_GRAPHS[runner.graphs] = MTPStepGraphs(runner)
    return sg
