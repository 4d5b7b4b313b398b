"""CUDA-graph capture of the decode step: one graph per batch-size bucket, replayed every step.

At batch 1 a DeepSeek decode step is hundreds of small kernels; launched eagerly from Python each
costs tens of µs of host time, far more than the kernel itself. Capturing the whole step (embed →
every decoder layer → final norm → lm_head → greedy argmax) once per batch bucket and replaying it
turns the step into one launch (the scheme of vLLM's / SGLang's CUDA-graph runners).

Static inputs live in one device byte buffer, filled each step from one pinned host buffer with a
single asynchronous copy (no per-tensor ``torch.tensor`` uploads):

    input_ids [max_batch] int64 | positions [max_batch] int64 | slot_mapping [max_batch] int64 |
    cache_seqlens [max_batch] int32 | block_table [max_batch, max_blocks] int32

A bucket-b graph reads the first b rows of each. A batch of B < b sequences is padded with dummy
rows that cannot touch real data: slot −1 (the latent-cache write skips it), cache_seqlens 0 (the
MLA decode kernel reads no key and writes out = 0; the split schedule gives the row no work),
position 0, token 0. The MLA split metadata is computed on the device inside the graph from the
static cache_seqlens (``get_mla_metadata`` is pure device arithmetic under capture). Outputs are
the graph's static logits [b, vocab] in the model's dtype (bf16 on CUDA: lm_head's own output, exactly
what an fp32 copy would round-trip; the sampler and the verification kernels read any float dtype) and
the greedy tokens [b] int64 (Triton split-row argmax, lowest id on ties); ``step`` returns views of
their first B rows, valid until the next step.

Prefill is captured only through :class:`PrefillGraphs` (opt-in: ``ModelRunner(prefill_graphs=...)``; one
graph per token bucket, padded prompts). MTP verify steps (seqlen_q = K+1) replay (bucket, K+1) graphs
when the runner's ``graph_verify`` is on; the drafter's host-side bookkeeping and non-greedy sampling (each request draws noise from its own
``torch.Generator``) run eagerly, on the graph's logits. Every kernel on the captured path must
be host-sync free (no ``.item()``/``.tolist()``/``.cpu()``); a sync inside capture raises from CUDA.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.model.mla import AttentionBatch
from tritonseek.parallel import close_before_shutdown

DEFAULT_MAX_BATCH = 128


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Graph batch sizes: powers of two below ``max_batch``, then ``max_batch`` itself (1, 2, 4, …, max_batch)."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return tuple(out)


def _close_before_shutdown(model, graphs) -> None:
    """Tensor parallel: the graphs capture NCCL collectives, so ``parallel.shutdown`` must drop them first."""
    if model.tp is not None and model.tp.enabled:
        close_before_shutdown(graphs)


def _graph_device(model, cache: PagedLatentCache) -> torch.device:
    """The cache's CUDA device, after checking that the model can be captured (ValueError otherwise)."""
    dev = cache.device if isinstance(cache.device, torch.device) else torch.device(cache.device)
    if dev.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA cache, got device {dev}")
    if not model.ops.is_triton:
        raise ValueError(f"CUDA graphs capture the triton backend, the model runs {model.ops.backend!r}")
    return dev


class StepBuffers:
    """The static decode inputs: one pinned host byte buffer mirrored by one device byte buffer.

    Args:
        max_batch: sequences per step at most.
        max_blocks: block_table width (cache blocks one sequence may hold).
        page_size: tokens per cache block.
        device: where the graph runs (cpu allowed, for tests of the packing; the host side is pinned
            only on CUDA).
        max_seqlen_q: new tokens per sequence at most (1 for decode; K+1 for an MTP verify step).
    Views (device): ``input_ids``, ``positions``, ``slot_mapping`` [max_batch·max_seqlen_q] int64 (token
    rows, sequence-major), ``cache_seqlens`` [max_batch] int32, ``block_table`` [max_batch, max_blocks] int32.
    """

    def __init__(self, max_batch: int, max_blocks: int, page_size: int, device: torch.device,
                 max_seqlen_q: int = 1):
        if max_batch < 1 or max_blocks < 1 or max_seqlen_q < 1:
            raise ValueError(f"max_batch={max_batch}, max_blocks={max_blocks} and max_seqlen_q={max_seqlen_q} "
                             "must be ≥ 1")
        self.max_batch, self.max_blocks, self.page_size = max_batch, max_blocks, page_size
        self.max_seqlen_q = max_seqlen_q
        mb, rows = max_batch, max_batch * max_seqlen_q
        self._off_ids, self._off_pos, self._off_slot = 0, 8 * rows, 16 * rows
        self._off_len = 24 * rows
        self._off_bt = self._off_len + 8 * ((4 * mb + 7) // 8)
        self.nbytes = self._off_bt + 4 * mb * max_blocks
        pin = device.type == "cuda"
        self.host = torch.zeros(self.nbytes, dtype=torch.uint8, pin_memory=pin)
        self.dev = torch.zeros(self.nbytes, dtype=torch.uint8, device=device)
        h = self.host.numpy()
        self.h_ids = h[self._off_ids : self._off_pos].view(np.int64)
        self.h_pos = h[self._off_pos : self._off_slot].view(np.int64)
        self.h_slot = h[self._off_slot : self._off_len].view(np.int64)
        self.h_len = h[self._off_len : self._off_len + 4 * mb].view(np.int32)
        self.h_bt = h[self._off_bt :].view(np.int32).reshape(mb, max_blocks)
        d = self.dev
        self.input_ids = d[self._off_ids : self._off_pos].view(torch.int64)
        self.positions = d[self._off_pos : self._off_slot].view(torch.int64)
        self.slot_mapping = d[self._off_slot : self._off_len].view(torch.int64)
        self.cache_seqlens = d[self._off_len : self._off_len + 4 * mb].view(torch.int32)
        self.block_table = d[self._off_bt :].view(torch.int32).view(mb, max_blocks)
        # (seq_id, blocks held) whose block list the device block_table row already holds
        self._rows: list[tuple[int, int] | None] = [None] * mb
        self._epoch = -1
        self._copied = torch.cuda.Event() if pin else None

    def fill(self, block_lists: list[list[int]], seq_ids: list[int], tokens: list[int] | None, positions: list[int],
             bucket: int, epoch: int = 0, seqlen_q: int = 1) -> None:
        """Write one step's inputs (sequences < B real, B … bucket−1 dummies) and upload them in one copy.

        Sequence i feeds seqlen_q tokens at positions[i] … positions[i]+seqlen_q−1 (token rows
        i·seqlen_q + j); token p's slot is block_lists[i][p // page_size]·page_size + p % page_size and
        cache_seqlens[i] = positions[i] + seqlen_q. tokens: the B·seqlen_q ids, or None when the caller
        copies device-resident ids into ``input_ids`` after this call (same stream). block_lists[i]:
        sequence i's whole block list; a block_table row is re-sent only when it grew or another
        sequence took the row. ``epoch``: the cache's release counter; when it moved, every row is
        re-sent (a sequence id may come back with other blocks). Dummy rows: token 0, position 0,
        slot −1, cache_seqlens 0.
        Raises ValueError when B > bucket, bucket > max_batch, seqlen_q > max_seqlen_q, a sequence
        lacks the block of its last position or holds more than max_blocks blocks.
        """
        B, q = len(positions), seqlen_q
        if not (B <= bucket <= self.max_batch) or len(block_lists) != B or len(seq_ids) != B:
            raise ValueError(f"batch {B} (seq_ids {len(seq_ids)}, blocks {len(block_lists)}) does not fit "
                             f"bucket {bucket} ≤ max_batch {self.max_batch}")
        if not 1 <= q <= self.max_seqlen_q:
            raise ValueError(f"seqlen_q={q} must be in 1..{self.max_seqlen_q}")
        if tokens is not None and len(tokens) != B * q:
            raise ValueError(f"got {len(tokens)} tokens for batch {B} × seqlen_q {q}")
        if self._copied is not None and not self._copied.query():
            self._copied.synchronize()  # the previous step's upload still reads the host buffer
        if epoch != self._epoch:
            self._rows = [None] * self.max_batch
            self._epoch = epoch
        ps, n_tok = self.page_size, B * q
        pos = np.asarray(positions, dtype=np.int64)
        if tokens is not None:
            self.h_ids[:n_tok] = tokens
        self.h_pos[:n_tok] = (pos[:, None] + np.arange(q)).reshape(-1) if q > 1 else pos
        self.h_len[:B] = pos + q
        dirty = -1
        slots = np.empty(n_tok, dtype=np.int64)
        for i, (sid, blocks) in enumerate(zip(seq_ids, block_lists)):
            n = len(blocks)
            p = positions[i]
            if (p + q - 1) // ps >= n:
                raise ValueError(f"sequence {sid} holds {n} blocks; position {p + q - 1} needs block {(p + q - 1) // ps}")
            if q == 1:
                slots[i] = blocks[p // ps] * ps + p % ps
            else:
                for j in range(q):
                    slots[i * q + j] = blocks[(p + j) // ps] * ps + (p + j) % ps
            if self._rows[i] != (sid, n):
                if n > self.max_blocks:
                    raise ValueError(f"sequence {sid} holds {n} cache blocks; the graphs were sized for "
                                     f"{self.max_blocks}")
                self.h_bt[i, :n] = blocks
                self._rows[i] = (sid, n)
                dirty = i
        self.h_slot[:n_tok] = slots
        if bucket > B:
            self.h_ids[n_tok : bucket * q] = 0
            self.h_pos[n_tok : bucket * q] = 0
            self.h_slot[n_tok : bucket * q] = -1
            self.h_len[B:bucket] = 0
        n = self._off_bt + (dirty + 1) * 4 * self.max_blocks
        self.dev[:n].copy_(self.host[:n], non_blocking=self._copied is not None)
        if self._copied is not None:
            self._copied.record()


class DecodeGraphs:
    """Captured decode steps of one model over one paged latent cache, one graph per (batch bucket, seqlen_q).

    Args:
        model: :class:`DeepseekForCausalLM` on CUDA with the triton backend (one process, or one rank of a
            tensor-parallel group: its all-reduces/gathers are captured too; every rank must capture and replay
            the same (bucket, seqlen_q) graphs in the same order).
        cache: the :class:`PagedLatentCache` the graphs write into (its tensors are baked into the graphs).
        max_blocks: widest block list one sequence may hold (block_table width).
        max_batch: largest batch the graphs serve (buckets: ``batch_buckets(max_batch)``).
        max_seqlen_q: most new tokens per sequence in one step (5 = MTP verify with K = 4 drafts).
    Graphs are captured lazily, the first time a (bucket, seqlen_q) is needed (an eager warm-up on a
    side stream, then the capture), into one shared memory pool. ``capture_s`` sums the time spent.
    Raises ValueError on a CPU model or a non-triton backend.
    """

    def __init__(self, model, cache: PagedLatentCache, max_blocks: int, max_batch: int = DEFAULT_MAX_BATCH,
                 max_seqlen_q: int = 5):
        dev = _graph_device(model, cache)
        self.model, self.cache, self.device = model, cache, dev
        self.buckets = batch_buckets(max_batch)
        self.max_batch = max_batch
        self.bufs = StepBuffers(max_batch, max_blocks, cache.page_size, dev, max_seqlen_q)
        self.num_heads = model.model.layers[0].self_attn.num_heads
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._pool = None
        self.capture_s = 0.0
        self.replays = 0
        _close_before_shutdown(model, self)

    def fits(self, batch: int, seqlen_q: int = 1) -> bool:
        return 1 <= batch <= self.max_batch and 1 <= seqlen_q <= self.bufs.max_seqlen_q

    def bucket(self, batch: int) -> int:
        """Smallest bucket holding ``batch`` rows (ValueError when batch > max_batch)."""
        for b in self.buckets:
            if b >= batch:
                return b
        raise ValueError(f"batch {batch} exceeds the graphs' max_batch {self.max_batch}")

    def _forward(self, b: int, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bufs, n = self.bufs, b * q
        seqlens = bufs.cache_seqlens[:b]
        batch = AttentionBatch(
            is_prefill=False, slot_mapping=bufs.slot_mapping[:n], block_table=bufs.block_table[:b],
            cache_seqlens=seqlens, seqlen_q=q, mla_metadata=self.model.ops.mla_metadata(seqlens, q, self.num_heads),
        )
        # the last residual add runs inside the final RMSNorm; logits stay in the model's dtype (no fp32
        # copy in the graph); the greedy token is a Triton split-row argmax (lowest id on ties), computed
        # for decode steps only (verify steps take the logits)
        hidden, normed = self.model.forward_normed(bufs.input_ids[:n], bufs.positions[:n], batch, self.cache.layers)
        logits = self.model.lm_head(normed)
        return logits, self.model.ops.argmax(logits) if q == 1 else None, hidden

    @torch.inference_mode()
    def _capture(self, b: int, q: int) -> None:
        t0 = time.perf_counter()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # compiles kernels, autotunes and allocates outside the capture
            self._forward(b, q)
        torch.cuda.current_stream(self.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool):
            logits, tokens, hidden = self._forward(b, q)
        self._pool = g.pool()
        self._graphs[(b, q)] = (g, logits, tokens, hidden)
        self.capture_s += time.perf_counter() - t0

    def capture(self, batch_sizes=None, seqlen_q: int = 1) -> None:
        """Capture the buckets of ``batch_sizes`` (default: all) now, with dummy inputs (slot −1, length 0).

        Only needed to move capture time out of the first steps (e.g. before benchmarking).
        """
        for b in sorted({self.bucket(x) for x in (batch_sizes or self.buckets)}, reverse=True):
            if (b, seqlen_q) not in self._graphs:
                self.bufs.fill([], [], [], [], b, self.cache.epoch, seqlen_q)
                self._capture(b, seqlen_q)

    def _replay(self, seq_ids, tokens, positions, q):
        b = self.bucket(len(seq_ids))
        blocks = self.cache.blocks
        host_tokens = None if isinstance(tokens, torch.Tensor) else tokens
        self.bufs.fill([blocks[s] for s in seq_ids], seq_ids, host_tokens, positions, b, self.cache.epoch, q)
        if host_tokens is None:
            self.bufs.input_ids[: len(seq_ids) * q].copy_(tokens.reshape(-1))
        if (b, q) not in self._graphs:
            self._capture(b, q)  # its eager warm-up runs this very step (idempotent: same latents, same slots)
        entry = self._graphs[(b, q)]
        entry[0].replay()
        self.replays += 1
        return entry

    @torch.inference_mode()
    def step(self, seq_ids: list[int], tokens: list[int], positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed tokens[i] of sequence seq_ids[i] at positions[i] (its cache blocks must already be allocated).

        Returns (argmax tokens [B] int64, logits [B, vocab] model dtype), views of the graph's static
        outputs: valid until the next replay. Raises ValueError when B exceeds max_batch or a
        sequence lacks the block for its position.
        """
        _, logits, toks, _ = self._replay(seq_ids, tokens, positions, 1)
        B = len(seq_ids)
        return toks[:B], logits[:B]

    @torch.inference_mode()
    def step_tokens(self, seq_ids: list[int], tokens: list[list[int]] | torch.Tensor,
                    starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed tokens[i] (seqlen_q of them, e.g. an MTP verify step's last token + K drafts; host lists or a
        device [B, seqlen_q] int64 tensor) at positions starts[i] … starts[i]+seqlen_q−1.

        Returns (logits [B·seqlen_q, vocab] model dtype, hidden [B·seqlen_q, hidden] pre-norm), views of the
        graph's static outputs, valid until the next replay (the same as ``ModelRunner.decode_tokens``).
        """
        if isinstance(tokens, torch.Tensor):
            q = tokens.shape[1]
        else:
            q = len(tokens[0])
            tokens = [t for row in tokens for t in row]
        _, logits, _, hidden = self._replay(seq_ids, tokens, starts, q)
        n = len(seq_ids) * q
        return logits[:n], hidden[:n]

    def graph(self, batch: int, seqlen_q: int = 1) -> torch.cuda.CUDAGraph:
        """The captured graph serving ``batch`` (for timing its bare replay; KeyError if not captured yet)."""
        return self._graphs[(self.bucket(batch), seqlen_q)][0]

    def close(self) -> None:
        """Drop the graphs (and the MTP graphs made for them) and their memory pool."""
        from tritonseek.engine.mtp_step import _STEP_GRAPHS
        from tritonseek.engine.speculative import _MTP_GRAPHS

        self._graphs.clear()
        self._pool = None
        _MTP_GRAPHS.pop(self, None)
        _STEP_GRAPHS.pop(self, None)


class PrefillGraphs:
    """Captured prefill forwards: prompts totalling ≤ a token bucket run as one graph replay.

    An eager prefill of a long prompt is host-bound between kernels wherever the host waits on the
    device (the MoE contiguous layout trims itself to its exact size with one host sync per MoE layer;
    every launch after such a sync starts from an empty queue). Under capture the MoE runs graph-safe at
    its bound layout (T·k + E·127 rows, padding tiles skipped) and the whole forward replays with no
    host work between kernels.

    Args:
        model: :class:`DeepseekForCausalLM` on CUDA, triton backend (one process or one tensor-parallel rank).
        cache: the :class:`PagedLatentCache` the prompts' latents are written into (baked into the graphs).
        buckets: token counts with a graph each (captured lazily, largest first into one shared pool).
        max_seqs: prompts per call at most.
    A call of B prompts with T tokens in all takes the smallest bucket Tb ≥ T; the Tb − T padding tokens
    form one extra sequence (token 0, positions 0…, slot −1: no cache write) after the real ones, and
    the unused sequence slots are empty (cu_seqlens repeats Tb). Outputs: logits of each prompt's last
    token [B, vocab] in the model's dtype and the hidden states [T, hidden] (pre-norm), views of the
    graph's static outputs, valid until the next replay. Raises ValueError on a CPU cache or a
    non-triton backend (tensor parallel: as :class:`DecodeGraphs`, every rank the same buckets in the same order).
    """

    def __init__(self, model, cache: PagedLatentCache, buckets=(1024, 2048, 4096, 8192), max_seqs: int = 4):
        dev = _graph_device(model, cache)
        if max_seqs < 1 or not buckets or min(buckets) < 1:
            raise ValueError(f"buckets {buckets} and max_seqs {max_seqs} must be positive")
        self.model, self.cache, self.device = model, cache, dev
        self.buckets, self.max_seqs = tuple(sorted(buckets)), max_seqs
        self._graphs: dict[int, tuple] = {}
        self._pool = None
        self.capture_s = 0.0
        self.replays = 0
        _close_before_shutdown(model, self)

    def bucket(self, tokens: int) -> int | None:
        """Smallest bucket holding ``tokens`` tokens, or None."""
        return next((b for b in self.buckets if b >= tokens), None)

    def fits(self, lens: list[int]) -> bool:
        return 1 <= len(lens) <= self.max_seqs and min(lens) >= 1 and self.bucket(sum(lens)) is not None

    def _forward(self, tb: int, bufs: dict):
        batch = AttentionBatch(is_prefill=True, slot_mapping=bufs["slots"], cu_seqlens=bufs["cu"], max_seqlen=tb)
        hidden, normed = self.model.forward_normed(bufs["ids"], bufs["pos"], batch, self.cache.layers)
        return self.model.lm_head(normed[bufs["last"]]), hidden

    @torch.inference_mode()
    def _capture(self, tb: int) -> None:
        t0 = time.perf_counter()
        S = self.max_seqs
        # one int64 device buffer: ids | pos | slots [tb each] | last [S] | cu [S + 2] (as int32 below)
        dev_buf = torch.zeros(3 * tb + 2 * S + 2, dtype=torch.int64, device=self.device)
        ids, pos, slots, last, cu64 = dev_buf.split([tb, tb, tb, S, S + 2])
        slots.fill_(-1)
        cu64.fill_(tb)
        cu64[0] = 0
        bufs = dict(buf=dev_buf, ids=ids, pos=pos, slots=slots, last=last, copied=torch.cuda.Event(),
                    cu=torch.empty(S + 2, dtype=torch.int32, device=self.device))
        bufs["cu"].copy_(cu64)
        host = torch.zeros(dev_buf.numel(), dtype=torch.int64, pin_memory=True)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # compiles, autotunes and allocates outside the capture
            self._forward(tb, bufs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool):
            bufs["cu"].copy_(cu64)  # cu_seqlens (int32) from the uploaded int64 row, inside the graph
            logits, hidden = self._forward(tb, bufs)
        self._pool = g.pool()
        self._graphs[tb] = (g, bufs, host, logits, hidden)
        self.capture_s += time.perf_counter() - t0

    def capture(self, buckets=None) -> None:
        """Capture the given buckets (default: all) now, largest first (moves capture time out of a run)."""
        for tb in sorted(set(buckets or self.buckets), reverse=True):
            if tb not in self._graphs:
                self._capture(tb)

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], slots: list[torch.Tensor]):
        """Prefill ``prompts`` (token id lists) whose cache slots are ``slots`` (CPU int64 tensors, one per
        prompt). Returns (logits [B, vocab] model dtype, hidden [T, hidden], the AttentionBatch of the real
        tokens (views of the static buffers), cu_seqlens as a list), all valid until the next replay.
        Raises ValueError when the prompts do not fit (``fits``)."""
        lens = [len(p) for p in prompts]
        if not self.fits(lens):
            raise ValueError(f"{len(lens)} prompts of {sum(lens)} tokens do not fit buckets {self.buckets} "
                             f"× {self.max_seqs} sequences (empty prompts are not allowed)")
        T, B, S = sum(lens), len(lens), self.max_seqs
        tb = self.bucket(T)
        if tb not in self._graphs:
            self._capture(tb)
        g, bufs, host, logits, hidden = self._graphs[tb]
        if not bufs["copied"].query():
            bufs["copied"].synchronize()  # the previous upload from this host buffer is still in flight
        cu = [0]
        for n in lens:
            cu.append(cu[-1] + n)
        h = host.numpy()
        h[:T] = np.concatenate([np.asarray(p, dtype=np.int64) for p in prompts])
        h[T:tb] = 0
        h[tb : tb + T] = np.concatenate([np.arange(n, dtype=np.int64) for n in lens])
        h[tb + T : 2 * tb] = np.arange(tb - T, dtype=np.int64)
        h[2 * tb : 2 * tb + T] = torch.cat(slots).numpy()
        h[2 * tb + T : 3 * tb] = -1
        o = 3 * tb
        h[o : o + S] = 0
        h[o : o + B] = np.asarray(cu[1:], dtype=np.int64) - 1
        o += S
        h[o : o + S + 2] = tb
        h[o : o + B + 1] = cu
        # the padding (if any) is sequence B: [T, tb); later sequences are empty
        bufs["buf"].copy_(host, non_blocking=True)
        bufs["copied"].record()
        g.replay()
        self.replays += 1
        batch = AttentionBatch(is_prefill=True, slot_mapping=bufs["slots"][:T], cu_seqlens=bufs["cu"][: B + 1],
                               max_seqlen=max(lens))
        return logits[:B], hidden[:T], batch, cu

    def close(self) -> None:
        self._graphs.clear()
        self._pool = None
