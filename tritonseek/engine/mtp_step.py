"""One CUDA graph per (batch bucket, K) for the whole device side of a greedy MTP speculative step.

The step-by-step path (:class:`~tritonseek.engine.speculative.MTPDrafter`: K−1 draft replays, a verify
replay, an eager verification kernel, ``.tolist()`` of its outputs, an MTP-pass replay, clones and index
gathers) cost 0.72 ms per step on the H200 on the tiny default model, whose plain decode step is one graph
replay of ~0.14 ms. Here one replay runs, for every live sequence with n+1 accepted tokens (t_n not yet in
the target cache, n carried on the device):

1. inputs: positions n … n+K, their cache slots (through the block table) and cache_seqlens n+K+1, on the device;
2. drafts: d_1 = the carried first draft; d_{j+1} = argmax head(MTP(d_j, h, position n+j−1)) for j < K
   (MTP latent cache written at n+j−1, cache_seqlens n+j);
3. verify: target forward over [t_n, d_1 … d_K] at positions n … n+K (seqlen_q K+1, bottom-right causal),
   then greedy verification (``Ops.verify_greedy``; K = 0: the argmax) → out [b, K+1] padded −1, a;
4. MTP pass over the same positions with the target hiddens and out (−1 read as token 0: rows past n+a are
   computed, never used); its row n+a gives the next h and first draft; t_{n+a+1} = out[a]; n += a+1;
5. results: one int64 row per sequence ``[out_0 … out_K, a]``; the carried state stays in device buffers that
   the next replay reads (no clones, no host round trip).

The host makes one device→host copy per step (the result rows, non-blocking into pinned memory) and waits on
it once, then does the bookkeeping (tokens, EOS / stop / max_new_tokens, freeing finished sequences' pages).
It uploads only B and the block-table rows that changed (one copy, on the steps where either changed); pages
for every position a launched step may touch are allocated before its launch; rejected positions are rolled
back by lengths only (n advances by a+1). Because nothing the next step needs comes from the host, ``LLM._speculate_graphs`` launches step t+1
before it reads step t when that is safe, so the host's bookkeeping overlaps the GPU. Rows of finished
sequences are dropped from the carried state by one gather (only on steps where some sequence finished).
Dummy rows of a bucket (position 0, slot −1, cache_seqlens 0) write no cache row and read no key.

Used for greedy batches on CUDA with the triton backend (``ModelRunner.graph_step``); sampling batches and
CPU runs take the step-by-step path. Same drafts, acceptance and tokens as that path (same kernels).
"""

from __future__ import annotations

import time
import weakref
from typing import NamedTuple

import numpy as np
import torch

from tritonseek.engine.cuda_graph import StepBuffers
from tritonseek.engine.speculative import greedy_draft_tokens
from tritonseek.kernels.reference.spec_step import spec_step_finish_ref, spec_step_inputs_ref
from tritonseek.kernels.spec_step import spec_step_finish, spec_step_inputs
from tritonseek.model.mla import AttentionBatch


class StepHandle(NamedTuple):
    """A launched step: its sequences (row order), drafts per sequence, result slot."""

    seqs: list
    k: int
    slot: int


class MTPStepGraphs:
    """Captured greedy MTP steps over a runner's cache, one graph per (batch bucket, K), K = 0 … MAX_K.

    Args:
        runner: a :class:`~tritonseek.engine.runner.ModelRunner` with :class:`DecodeGraphs` (its buckets, batch
            limit and block-table width are used; no reference to either is kept).
    Carried state (device, [max_batch] rows, row i = the i-th sequence of the launch): ``h_last`` [max_batch,
    hidden] model dtype (MTP hidden at the last accepted position, pre ``shared_head.norm``), ``first`` int64 (its
    greedy draft), ``last`` int64 (the newest accepted token t_n, not yet in the cache), ``pos0`` int64 (n, its
    position). A replay derives positions n … n+K, cache slots (through the block table) and cache_seqlens n+K+1
    from ``pos0`` on the device and advances ``pos0`` by num_accepted + 1, so consecutive steps need no host
    input but the block table (re-sent only for rows whose block list changed) and the live row count B
    (rows B … bucket−1 are dummies: position 0, slot −1, cache_seqlens 0): one int32 upload ``meta`` =
    [B, 3 pad, block_table [max_batch, max_blocks]]. Results: ``res`` [max_batch·(MAX_K+2)] int64, read as [b, K+2] rows
    ``out_0 … out_K, num_accepted``, copied after each replay into one of two pinned host slots.
    ``lookahead``: the engine may launch step t+1 before reading step t (see ``LLM._speculate_graphs``).
    Graphs are captured lazily into one pool; ``capture_s`` sums the capture time.
    """

    MAX_K = 4
    lookahead = True  # the engine may launch step t+1 before reading step t

    def __init__(self, runner):
        g, model = runner.graphs, runner.model
        self.model, self.cache, self.dev = model, runner.cache, g.device
        self.mtp = model.mtp[0]
        self.mtp_cache = runner.cache.layers[model.cfg.num_hidden_layers]
        self.num_heads = model.model.layers[0].self_attn.num_heads
        self.mtp_heads = self.mtp.block.self_attn.num_heads
        self.buckets, self.max_batch = tuple(g.buckets), g.max_batch
        self.page_size, self.max_blocks = runner.cache.page_size, g.bufs.max_blocks
        mb, dev = g.max_batch, self.dev
        self.h_last = torch.zeros(mb, model.cfg.hidden_size, dtype=model.dtype, device=dev)
        self.first = torch.zeros(mb, dtype=torch.int64, device=dev)
        self.last = torch.zeros(mb, dtype=torch.int64, device=dev)
        self.pos0 = torch.zeros(mb, dtype=torch.int64, device=dev)
        # [B, 3 pad | block_table]: the table starts 16 bytes in (aligned like a fresh tensor)
        self.meta = torch.zeros(4 + mb * self.max_blocks, dtype=torch.int32, device=dev)
        self.block_table = self.meta[4:].view(mb, self.max_blocks)
        self.res = torch.zeros(mb * (self.MAX_K + 2), dtype=torch.int64, device=dev)
        # per-step device buffers: pos, slots [b·q] row-major, pos_t, slots_t [q·b] int64 and lens_t [q·b] int32
        # column-major, ids [b·q]; sel [b] (rows of the MTP pass output to carry)
        rows = mb * (self.MAX_K + 1)
        self._io = [torch.zeros(rows, dtype=torch.int32 if i == 4 else torch.int64, device=dev) for i in range(6)]
        self._sel = torch.zeros(mb, dtype=torch.int64, device=dev)
        pin = dev.type == "cuda"
        self._bt = np.zeros((mb, self.max_blocks), dtype=np.int32)  # host master copy of the block table
        self._row_key: list[tuple[int, int] | None] = [None] * mb  # (seq_id, blocks) each device row holds
        self._meta_host = [torch.zeros(self.meta.numel(), dtype=torch.int32, pin_memory=pin) for _ in range(2)]
        self._res_host = [torch.zeros(self.res.numel(), dtype=torch.int64, pin_memory=pin) for _ in range(2)]
        self._uploaded = [torch.cuda.Event() if pin else None for _ in range(2)]
        self._copied = [torch.cuda.Event() if pin else None for _ in range(2)]
        self._idx_host = torch.zeros(mb, dtype=torch.int64, pin_memory=pin)
        self._idx_dev = torch.zeros(mb, dtype=torch.int64, device=dev)
        self._idx_copied = torch.cuda.Event() if pin else None
        self._launches = 0
        self._meta_b = -1  # the B the device meta holds
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
        model, ops, mtp = self.model, self.model.ops, self.mtp
        q = k + 1
        n = b * q
        pos, slots, pos_t, slots_t, lens_t, ids = (t[:n] for t in self._io)
        bt = self.block_table[:b]
        inputs, finish = (spec_step_inputs, spec_step_finish) if ops.is_triton else (spec_step_inputs_ref,
                                                                                   spec_step_finish_ref)
        # positions n … n+K (row-major for the verify forward, column-major for the draft steps), slots, lengths;
        # ids column 0 = t_n, column 1 = d_1 (the carried first draft)
        inputs(self.pos0, self.meta, self.block_table, self.last, self.first, b, q, self.page_size, pos, slots,
               pos_t, slots_t, lens_t, ids)
        ids2 = ids.view(b, q)
        d, h = self.first[:b], self.h_last[:b]
        for j in range(1, k):  # draft step j: MTP at position n+j−1 on d_j, cache_seqlens n+j (dummy rows 0)
            c = slice((j - 1) * b, j * b)
            bj = AttentionBatch(is_prefill=False, slot_mapping=slots_t[c], block_table=bt, cache_seqlens=lens_t[c],
                                seqlen_q=1, mla_metadata=ops.mla_metadata(lens_t[c], 1, self.mtp_heads))
            h = mtp(d, h, pos_t[c], bj, self.mtp_cache)
            d = greedy_draft_tokens(mtp, ops, h)
            ids2[:, j + 1].copy_(d)
        lens = lens_t[(q - 1) * b:]
        batch = AttentionBatch(is_prefill=False, slot_mapping=slots, block_table=bt, cache_seqlens=lens,
                               seqlen_q=q, mla_metadata=ops.mla_metadata(lens, q, self.num_heads))
        hidden, normed = model.forward_normed(ids, pos, batch, self.cache.layers)
        logits = model.lm_head(normed)
        if k:
            out, num_acc = ops.verify_greedy(ids2[:, 1:], logits.view(b, q, -1))
        else:
            out, num_acc = ops.argmax(logits)[:, None], None
        # result rows, t_{n+a+1} = out[a], n += a+1, ids ← max(out, 0) for the MTP pass, sel = row·q + a
        finish(out, num_acc, b, q, self.res, self.last, self.pos0, ids, self._sel)
        # MTP pass: the MTP layer's batch has the same heads, lengths and slots as the verify forward; its row n+a
        # is the next carried h, whose greedy token is the next first draft
        h_all = mtp(ids, hidden, pos, batch, self.mtp_cache)
        torch.index_select(h_all, 0, self._sel[:b], out=self.h_last[:b])
        self.first[:b].copy_(greedy_draft_tokens(mtp, ops, self.h_last[:b]))

    def _state(self) -> tuple[torch.Tensor, ...]:
        return self.h_last, self.first, self.last, self.pos0

    def _capture(self, b: int, k: int) -> None:
        t0 = time.perf_counter()
        saved = [t.clone() for t in self._state()]
        side = torch.cuda.Stream(self.dev)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(side):  # compiles / allocates outside the capture; same cache writes as the replay
            self._forward(b, k)
        torch.cuda.current_stream(self.dev).wait_stream(side)
        for t, s in zip(self._state(), saved):
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
    def load(self, seqs, h_last: torch.Tensor, first: torch.Tensor) -> None:
        """Carried state of ``seqs`` (rows 0 … B−1) after prefill: h_last [B, H] and first drafts [B] (device)."""
        B = len(seqs)
        self.h_last[:B].copy_(h_last)
        self.first[:B].copy_(first)
        host = torch.tensor([[s.last_token for s in seqs], [s.num_tokens - 1 for s in seqs]], dtype=torch.int64)
        dev = host.to(self.dev)
        self.last[:B].copy_(dev[0])
        self.pos0[:B].copy_(dev[1])
        self._row_key = [None] * self.max_batch  # a new call: sequence ids restart with other blocks
        self._meta_b = -1

    @torch.inference_mode()
    def compact(self, idx: list[int]) -> None:
        """Drop the carried rows of finished sequences: row i ← row idx[i] (idx increasing; no work when it is
        0 … len−1). Stream-ordered after every launched step."""
        m = len(idx)
        if m == 0 or idx[-1] == m - 1:
            return
        if self._idx_copied is not None:
            self._idx_copied.synchronize()  # the previous compaction's upload has read _idx_host
        self._idx_host[:m] = torch.as_tensor(idx, dtype=torch.int64)
        sel = self._idx_dev[:m]
        sel.copy_(self._idx_host[:m], non_blocking=self._idx_copied is not None)
        for t in self._state():
            t[:m] = t.index_select(0, sel)
        self._row_key = [None] * self.max_batch  # rows moved: re-send the block table
        if self._idx_copied is not None:
            self._idx_copied.record()

    @torch.inference_mode()
    def launch(self, seqs, k: int, pending: int = 0) -> StepHandle:
        """Enqueue one greedy MTP step of ``seqs`` (row i = carried row i) with k drafts (0 … MAX_K).

        ``pending``: tokens the steps already launched but not yet read may still add to every sequence (their
        K+1); pages are allocated for num_tokens − 1 + pending + k + 1 tokens. Uploads B and the changed
        block-table rows (one copy; none when neither changed), replays the (bucket, k) graph and enqueues the copy of its result rows to a
        pinned host slot; nothing waits. Raises ValueError when B exceeds max_batch, k is outside 0 … MAX_K or a
        sequence needs more than max_blocks blocks.
        """
        B, q = len(seqs), k + 1
        if not self.fits(B) or not 0 <= k <= self.MAX_K:
            raise ValueError(f"batch {B} / k {k} outside 1 … {self.max_batch} / 0 … {self.MAX_K}")
        b, cache = self.bucket(B), self.cache
        slot = self._launches % 2
        self._launches += 1
        dirty = -1
        for i, s in enumerate(seqs):
            cache.ensure_capacity(s.seq_id, s.num_tokens + pending + q - 1)
            blocks = cache.blocks[s.seq_id]
            if self._row_key[i] != (s.seq_id, len(blocks)):
                if len(blocks) > self.max_blocks:
                    raise ValueError(f"sequence {s.seq_id} holds {len(blocks)} cache blocks; the graphs were "
                                     f"sized for {self.max_blocks}")
                self._bt[i, : len(blocks)] = blocks
                self._row_key[i] = (s.seq_id, len(blocks))
                dirty = i
        if dirty >= 0 or B != self._meta_b:  # most steps change neither: nothing to upload
            if self._uploaded[slot] is not None:
                self._uploaded[slot].synchronize()  # this slot's previous upload (two launches ago) has run
            n = 4 + (dirty + 1) * self.max_blocks
            host = self._meta_host[slot]
            h = host.numpy()
            h[0] = B
            h[4:n] = self._bt[: dirty + 1].reshape(-1)
            self.meta[:n].copy_(host[:n], non_blocking=self._uploaded[slot] is not None)
            if self._uploaded[slot] is not None:
                self._uploaded[slot].record()
            self._meta_b = B
        if (b, k) not in self._graphs:
            self._capture(b, k)
        self._replay(b, k)
        self.replays += 1
        m = B * (q + 1)
        self._res_host[slot][:m].copy_(self.res[:m], non_blocking=self._copied[slot] is not None)
        if self._copied[slot] is not None:
            self._copied[slot].record()
        return StepHandle(list(seqs), k, slot)

    def wait(self, handle: StepHandle) -> tuple[np.ndarray, np.ndarray]:
        """The results of a launched step: (out [B, k+1] int64 padded −1, num_accepted [B] int64), host numpy views
        valid until the launch after next. Waits on that step's copy event (the step's one host wait)."""
        B, q = len(handle.seqs), handle.k + 1
        if self._copied[handle.slot] is not None:
            self._copied[handle.slot].synchronize()
        r = self._res_host[handle.slot][: B * (q + 1)].numpy().reshape(B, q + 1)
        return r[:, :q], r[:, q]

    def step(self, seqs, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``wait(launch(seqs, k))``: one step, read at once."""
        return self.wait(self.launch(seqs, k))


_STEP_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def step_graphs_for(runner) -> MTPStepGraphs:
    """The MTPStepGraphs of the runner's DecodeGraphs (made on first use, reused by later ``generate`` calls while
    the engine keeps those graphs and their cache)."""
    sg = _STEP_GRAPHS.get(runner.graphs)
    if sg is None or sg.cache is not runner.cache or sg.model is not runner.model:
        sg = _STEP_GRAPHS[runner.graphs] = MTPStepGraphs(runner)
    return sg
