"""MTP speculative decoding: draft K tokens with the MTP layer, verify them in one target forward.

Per step, for every live sequence with n+1 accepted tokens t_0…t_n (t_n not yet in the target cache):

1. Draft. The MTP layer's last output (position n−1, fed by the target hidden h_{n−1} and t_n) gave
   d_{n+1}; each further draft step j runs the MTP block at position n+j−2 on its own previous
   hidden and d_{n+j−1} (greedy drafts, so q is one-hot).
2. Verify. The target runs t_n, d_{n+1}…d_{n+K} at positions n…n+K (seqlen_q = K+1, bottom-right
   causal mask) in one forward; greedy or rejection-sampling verification emits a+1 tokens
   (a accepted drafts + the correction or bonus token). Rejected positions are rolled back by
   lengths only: their cache rows are simply overwritten later.
3. MTP pass. The MTP layer runs over positions n…n+K again, now fed by the *target* hidden states
   and the emitted tokens, which rewrites its cache for the accepted positions; its output at
   position n+a drafts the next step's first token.

Hidden state fed to the MTP layer: the output of the main model's last decoder layer *before* the
final norm. DeepSeek-V3's report (§2.2, Fig. 3) feeds the representation h_i^{k−1} that the main
model's Transformer blocks produce, and gives the MTP module its own RMSNorm (``hnorm``) for it and
its own output norm (``shared_head.norm``) before the shared head — i.e. the final norm belongs to
the output head, not to the representation. The trained default model is trained this way, and a
test checks that acceptance drops if the post-norm state is fed instead.

CUDA graphs: when the runner replays verify steps from graphs (``ModelRunner.graph_verify``), the
drafter also replays its own MTP forwards from graphs (:class:`MTPGraphs`: one per batch bucket and
seqlen — 1 for a draft step, K+1 for the MTP pass); otherwise every MTP forward runs eagerly.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from tritonseek.engine.runner import ModelRunner, Sequence
from tritonseek.model.mla import AttentionBatch


def greedy_draft_tokens(mtp, ops, h: torch.Tensor) -> torch.Tensor:
    """Greedy MTP drafts: token_b = argmax_v shared_head.head(shared_head.norm(h))[b, v], lowest id on ties.

    mtp: the :class:`~tritonseek.model.model.MTPLayer`; ops: the model's ``Ops`` (backend); h: [B, H] MTP hidden
    (model dtype, pre ``shared_head.norm``). Returns [B] int64. The head's logits [B, V] are read in the dtype the
    head computes them in (bf16) by ``ops.argmax`` (Triton split-row argmax on the GPU, graph-safe; torch.argmax
    on the reference backend), instead of an fp32 copy and torch.argmax: the same tokens, since a bf16 value's
    fp32 copy is exact. Semantics: ``MTPLayer.logits(h).argmax(-1)``.
    """
    sh = mtp.shared_head
    return ops.argmax(sh.head(sh.norm(h)))


def step_randomness(seqs: list[Sequence], k: int, counts: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uniforms [B, k] fp32 in [0, 1), seeds [B] int64) of one verify step, on the host.

    counts: per sequence, how many of its k drafts are real (:func:`step_plan`'s masked step); sequence i draws
    only min(counts[i], k) uniforms (the rest are 0, never read: its later drafts are rejected), so its numbers
    equal those of a step with that many drafts. None: k each.

    Counter-based: sequence i's numbers come from a NumPy Philox stream keyed by (its request seed, its token
    count before the step), so they are reproducible, do not depend on the other sequences of the batch, and
    differ every step (each step emits >= 1 token). The seed keys the kernel's in-register Philox Exp(1) race
    noise (``verify_rejection(..., seeds=)``), so a step reads and writes no [B, K+1, V] noise tensor and
    makes no per-sequence generator launches. Greedy sequences (no generator) get zeros.
    """
    uniforms = np.zeros((len(seqs), k), dtype=np.float32)
    seeds = np.zeros(len(seqs), dtype=np.int64)
    for i, s in enumerate(seqs):
        if s.params.temperature > 0 and s.generator is not None:
            key = (s.generator.initial_seed() % 2**64) << 64 | s.num_tokens
            rng = np.random.Generator(np.random.Philox(key=key))
            c = k if counts is None else min(counts[i], k)
            uniforms[i, :c] = rng.random(c, dtype=np.float32)
            seeds[i] = rng.integers(0, 2**62)
    return torch.from_numpy(uniforms), torch.from_numpy(seeds)


def step_plan(seqs: list[Sequence], k_max: int,
              max_positions: int) -> list[tuple[int, list[int], list[int] | None]]:
    """The verify batches of one eager MTP step: [(k, indices into seqs, per-row draft limits or None)], usually one.

    A sequence never drafts past what it may still emit: its limit is min(k_max, max_new_tokens − emitted − 1).
    The step is ONE verify batch at k = max(1, largest limit) in which each row's drafts past its own limit are
    masked (−1 to the verifier: rejected, so the row emits there the sample of p, or the argmax, that its bonus
    token would be; ``MTPDrafter.verify``) and its randomness is drawn for its own limit (``step_randomness``).
    A sequence's tokens then depend on its own state only, not on its batch-mates: one K = min over the batch made
    a seeded request's tokens depend on them (h3tester s24 #2); a row at limit 0 samples through the verifier
    (Philox, step seed) like every other step, not through ``ModelRunner.sample``. Rows with a smaller limit
    cost compute on masked positions, not extra forwards. When a row's positions n..n+k would reach
    max_positions (a sequence near max_position_embeddings), one masked batch per distinct max(1, limit) instead:
    each row's own n + limit + 1 is always below it.
    H200 s24 W2 (h4fix, 16 sampled prompts × 64 new tokens, default model, 7 rounds): mtp=3 51 decode steps,
    103 ms median per generate vs 112 ms / 53 steps for the old one-K rule (0.92×) and 125 ms / 68 steps for one
    batch per draft count (0.83×; A/A 1.001); mtp=1 1.006× the old rule (A/A 0.986), 49 vs 51 steps.
    An all-greedy batch keeps k = the smallest limit, unmasked (limits None; k = 0: a plain decode step): its tokens
    do not depend on k, and the whole-step graphs (``LLM._speculate_graphs``) take the same k, so both paths run
    the same steps and drafts (tests compare them draft for draft).
    """
    lim = [min(k_max, s.params.max_new_tokens - len(s.out_ids) - 1) for s in seqs]
    if all(s.params.temperature <= 0 for s in seqs):
        return [(min(lim), list(range(len(seqs))), None)]
    k = max(1, max(lim))
    if all(s.num_tokens - 1 + k < max_positions for s in seqs):
        return [(k, list(range(len(seqs))), lim)]
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lim):
        groups.setdefault(max(1, n), []).append(i)
    return [(g, rows, [lim[i] for i in rows]) for g, rows in sorted(groups.items(), reverse=True)]


class MTPGraphs:
    """CUDA graphs of the MTP layer's decode-time forwards over the runner's cache, one per (batch bucket, seqlen q).

    q = 1 is a draft step (ids = previous drafts, hidden = the MTP layer's previous output); q = K+1 is the
    MTP pass (ids = emitted tokens, hidden = the verify forward's target hiddens, output taken at row
    num_accepted of each sequence). Each graph computes h = mtp(ids, hidden, positions, batch) and
    its greedy draft (:func:`greedy_draft_tokens`). Static inputs: a
    :class:`~tritonseek.engine.cuda_graph.StepBuffers` (ids, positions, slots, cache_seqlens, block_table; dummy
    rows write slot −1 and read no key), a zeroed hidden buffer [max_batch·(K+1), H] and num_accepted [max_batch].
    Outputs are cloned after each replay (graphs share one memory pool). Sized from the runner's
    :class:`DecodeGraphs` (same buckets, batch limit and block-table width); :func:`mtp_graphs_for` keeps one per
    DecodeGraphs, so ``generate`` calls reuse the captures.
    """

    MAX_K = 4

    def __init__(self, runner: ModelRunner):
        from tritonseek.engine.cuda_graph import StepBuffers

        g, model = runner.graphs, runner.model
        # no reference to the runner or the DecodeGraphs: mtp_graphs_for keys a weak dict by the latter
        self.model, self.cache, self.dev = model, runner.cache, g.device
        self.mtp = model.mtp[0]
        self.mtp_cache = runner.cache.layers[model.cfg.num_hidden_layers]
        self.num_heads = self.mtp.block.self_attn.num_heads
        self.buckets = tuple(g.buckets)
        self.max_batch = g.max_batch
        q_max = self.MAX_K + 1
        self.bufs = StepBuffers(g.max_batch, g.bufs.max_blocks, runner.cache.page_size, self.dev, q_max)
        self.hidden = torch.zeros(g.max_batch * q_max, model.cfg.hidden_size, dtype=model.dtype, device=self.dev)
        self.num_acc = torch.zeros(g.max_batch, dtype=torch.int64, device=self.dev)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool = None

    def bucket(self, batch: int) -> int:
        return next(b for b in self.buckets if b >= batch)

    def fits(self, batch: int) -> bool:
        return 1 <= batch <= self.max_batch

    def _forward(self, b: int, q: int):
        bufs, n = self.bufs, b * q
        seqlens = bufs.cache_seqlens[:b]
        batch = AttentionBatch(
            is_prefill=False, slot_mapping=bufs.slot_mapping[:n], block_table=bufs.block_table[:b],
            cache_seqlens=seqlens, seqlen_q=q, mla_metadata=self.model.ops.mla_metadata(seqlens, q, self.num_heads),
        )
        h = self.mtp(bufs.input_ids[:n], self.hidden[:n], bufs.positions[:n], batch, self.mtp_cache)
        if q > 1:
            h = h.view(b, q, -1)[torch.arange(b, device=h.device), self.num_acc[:b]]
        return h, greedy_draft_tokens(self.mtp, self.model.ops, h)

    def _capture(self, b: int, q: int) -> None:
        side = torch.cuda.Stream(self.dev)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(side):  # compile / allocate outside the capture (same writes as the replay)
            self._forward(b, q)
        torch.cuda.current_stream(self.dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            h, tok = self._forward(b, q)
        self._pool = graph.pool()
        self._graphs[(b, q)] = (graph, h, tok)

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], starts: list[int], ids: torch.Tensor, hidden: torch.Tensor,
            num_acc: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, q] int64 at positions starts[i] … starts[i]+q−1, hidden [B·q, H] → (h [B, H], argmax [B]) (copies)."""
        B, q = ids.shape
        b = self.bucket(B)
        blocks = self.cache.blocks
        self.bufs.fill([blocks[s.seq_id] for s in seqs], [s.seq_id for s in seqs], None, starts, b,
                       getattr(self.cache, "epoch", 0), q)
        self.bufs.input_ids[: B * q].copy_(ids.reshape(-1))
        self.hidden[: B * q].copy_(hidden.reshape(B * q, -1))
        self.num_acc.zero_()  # dummy rows: a stale count could index past a shorter q
        if num_acc is not None:
            self.num_acc[:B].copy_(num_acc)
        if (b, q) not in self._graphs:
            self._capture(b, q)
        return self._replay(b, q, B)

    def _replay(self, b: int, q: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        graph, h, tok = self._graphs[(b, q)]
        graph.replay()
        return h[:B].clone(), tok[:B].clone()


_MTP_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def mtp_graphs_for(runner: ModelRunner) -> MTPGraphs:
    """The MTPGraphs of the runner's DecodeGraphs (made on first use, then reused by later ``generate`` calls
    while the engine keeps those graphs and their cache)."""
    mg = _MTP_GRAPHS.get(runner.graphs)
    if mg is None or mg.cache is not runner.cache or mg.model is not runner.model:
        mg = _MTP_GRAPHS[runner.graphs] = MTPGraphs(runner)
    return mg


class MTPDrafter:
    """Drafting and verification state machine over a :class:`ModelRunner`.

    Args:
        runner: the runner of this generate call (its cache has one extra layer for the MTP block).
        k: drafts per step, 1–4.
    Raises:
        ValueError: the model has no MTP layer, or k outside 1–4.
    """

    def __init__(self, runner: ModelRunner, k: int):
        model = runner.model
        if not len(model.mtp):
            raise ValueError("--mtp needs MTP weights (model.layers.{num_hidden_layers}.*), and this checkpoint has none")
        if not 1 <= k <= 4:
            raise ValueError(f"mtp={k} must be between 1 and 4")
        self.runner = runner
        self.model = model
        self.mtp = model.mtp[0]
        self.k = k
        self.mtp_cache = runner.cache.layers[model.cfg.num_hidden_layers]
        self.graphs = mtp_graphs_for(runner) if getattr(runner, "graph_verify", False) else None
        self._step_graphs = None  # MTPStepGraphs, made on first use (greedy batches with runner.graph_step)
        self.proposed = 0
        self.accepted = 0
        self.steps = 0  # verify steps
        self.seq_steps = 0  # Σ over steps of the live sequences (per-sequence tokens/step denominator)
        self.emitted = 0

    def step_graphs(self, seqs: list[Sequence]):
        """The runner's :class:`~tritonseek.engine.mtp_step.MTPStepGraphs` when this batch can run whole steps as one
        graph replay (``runner.graph_step``, every sequence greedy, batch within the graphs' limit), else None."""
        if not getattr(self.runner, "graph_step", False) or any(s.params.temperature > 0 for s in seqs):
            return None
        if self._step_graphs is None:
            from tritonseek.engine.mtp_step import step_graphs_for

            self._step_graphs = step_graphs_for(self.runner)
        return self._step_graphs if self._step_graphs.fits(len(seqs)) else None

    def _tensor(self, data, dtype=torch.int64):
        return torch.tensor(data, dtype=dtype, device=self.runner.device)

    @torch.inference_mode()
    def after_prefill(self, seqs: list[Sequence], hidden: torch.Tensor, batch: AttentionBatch, cu: list[int]):
        """MTP pass over every prompt position i (target h_i, next token t_{i+1}); returns
        (MTP hidden [B, H] at each prompt's last position, first drafts [B])."""
        ids = []
        for s in seqs:
            ids.extend(s.prompt_ids[1:] + [s.out_ids[0]])
        pos = torch.cat([torch.arange(c1 - c0, device=hidden.device) for c0, c1 in zip(cu[:-1], cu[1:])])
        h = self.mtp(self._tensor(ids), hidden, pos, batch, self.mtp_cache)
        last = self._tensor([c - 1 for c in cu[1:]])
        h_last = h[last]
        return h_last, greedy_draft_tokens(self.mtp, self.model.ops, h_last)

    @torch.inference_mode()
    def draft(self, seqs: list[Sequence], h_last: torch.Tensor, first: torch.Tensor, k: int) -> torch.Tensor:
        """k greedy drafts per sequence [B, k]: the first is given, the rest from chained MTP steps."""
        drafts = [first]
        h = h_last
        graphs = self.graphs is not None and self.graphs.fits(len(seqs))
        for j in range(1, k):
            starts = [s.num_tokens - 1 + j - 1 for s in seqs]  # position n+j-1 with n = num_tokens-1
            if graphs:
                for s, p in zip(seqs, starts):
                    self.runner.cache.ensure_capacity(s.seq_id, p + 1)
                h, tok = self.graphs.run(seqs, starts, drafts[-1][:, None], h)
                drafts.append(tok)
                continue
            batch = self._mtp_batch(seqs, starts, 1)
            h = self.mtp(drafts[-1], h, self._tensor(starts), batch, self.mtp_cache)
            drafts.append(greedy_draft_tokens(self.mtp, self.model.ops, h))
        return torch.stack(drafts, dim=1)

    def _mtp_batch(self, seqs, starts, s_q) -> AttentionBatch:
        # The MTP cache shares block ids with the target cache (one block table, one more layer).
        return self.runner.decode_batch(seqs, starts, s_q)

    @torch.inference_mode()
    def verify(self, seqs: list[Sequence], drafts: torch.Tensor, limits: list[int] | None = None):
        """Target forward over [t_n, drafts] and verification.

        limits: per row, how many drafts are real (:func:`step_plan`'s masked step): the verifier sees −1 past them
        (never accepted; the position emits a sample of p, or the argmax for a greedy row, as a bonus token at that
        position would be; the forward still feeds the real drafts) and the row's randomness is drawn for that count.
        Returns (output_tokens [B, K+1] int64 padded −1, num_accepted [B], target hidden [B, K+1, H]).
        """
        B, k = drafts.shape
        starts = [s.num_tokens - 1 for s in seqs]
        # Drafts stay on the device: no host sync between drafting and the verify forward.
        last = self._tensor([s.last_token for s in seqs])
        tokens = torch.cat([last[:, None], drafts.to(torch.int64)], dim=1)
        logits, hidden = self.runner.decode_tokens(seqs, tokens, starts)
        V = logits.shape[-1]
        logits = logits.view(B, k + 1, V)
        if limits is not None and min(limits) < k:
            cut = self._tensor(limits)
            drafts = drafts.masked_fill(torch.arange(k, device=drafts.device)[None, :] >= cut[:, None], -1)
        if all(s.params.temperature == 0 for s in seqs):
            out, num_acc = self.model.ops.verify_greedy(drafts, logits)
            return out, num_acc, hidden.view(B, k + 1, -1)
        dev = logits.device
        temperature = torch.tensor([float(s.params.temperature) for s in seqs], dtype=torch.float32, device=dev)
        # no filter launches when no sequence filters (host values: SamplingParams)
        top_k = top_p = None
        if any(s.params.top_k > 0 for s in seqs):
            top_k = torch.tensor([s.params.top_k for s in seqs], dtype=torch.int32, device=dev)
        if any(s.params.top_p < 1 for s in seqs):
            top_p = torch.tensor([float(s.params.top_p) for s in seqs], dtype=torch.float32, device=dev)
        uniforms_h, seeds_h = step_randomness(seqs, k, limits)
        uniforms, seeds = uniforms_h.to(dev), seeds_h.to(dev)
        if self.model.ops.is_triton:
            # the Exp(1) race noise is made in registers by Philox from seeds (no [B, K+1, V] tensor)
            from tritonseek.kernels.spec_verify import verify_rejection

            out, num_acc = verify_rejection(drafts, None, logits, temperature, top_k, top_p, uniforms, None,
                                            seeds=seeds)
        else:  # the reference backend takes the noise as a tensor: drawn from the same per-step seeds
            noise = torch.ones(B, k + 1, V, dtype=torch.float32, device=dev)
            for i, s in enumerate(seqs):
                if s.params.temperature > 0:
                    gen = torch.Generator(device=dev).manual_seed(int(seeds_h[i]))
                    # a masked row fills the rows a step at its own limit would (the rest are never read)
                    noise[i, : k + 1 if limits is None else min(limits[i], k) + 1].exponential_(generator=gen)
            out, num_acc = self.model.ops.verify(drafts, logits, temperature, top_k, top_p, uniforms, noise)
        return out, num_acc, hidden.view(B, k + 1, -1)

    @torch.inference_mode()
    def mtp_pass(self, seqs: list[Sequence], starts: list[int], out: torch.Tensor, num_acc: torch.Tensor,
                 target_hidden: torch.Tensor):
        """MTP over the verified positions with target hiddens and emitted tokens; returns
        (MTP hidden [B, H] at position n+a, next first drafts [B])."""
        B, k1 = out.shape
        if self.graphs is not None and self.graphs.fits(B):
            for s, p in zip(seqs, starts):
                self.runner.cache.ensure_capacity(s.seq_id, p + k1)
            return self.graphs.run(seqs, starts, out.clamp_min(0), target_hidden.reshape(B * k1, -1),
                                   num_acc.long())
        batch = self._mtp_batch(seqs, starts, k1)
        ids = out.clamp_min(0).reshape(-1)  # −1 padding rows are beyond n+a: computed, never used
        pos = self._tensor([p + j for p in starts for j in range(k1)])
        h = self.mtp(ids, target_hidden.reshape(B * k1, -1), pos, batch, self.mtp_cache).view(B, k1, -1)
        h_last = h[torch.arange(B, device=h.device), num_acc.long()]
        return h_last, greedy_draft_tokens(self.mtp, self.model.ops, h_last)
