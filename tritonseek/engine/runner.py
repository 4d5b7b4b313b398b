"""Model runner: turns a list of sequences into one prefill or decode step over the paged cache.

Prefill flattens all prompts into one varlen batch (cu_seqlens); decode feeds each live
sequence's newest token(s). With :class:`~tritonseek.engine.cuda_graph.DecodeGraphs` attached
(CUDA, triton backend), ``decode_step`` replays a captured graph instead of launching eagerly. Sampling draws each request's randomness from its own seeded
generator, so a prompt's output does not depend on which other prompts share its batch.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field

import torch

from tritonseek.engine.cuda_graph import DecodeGraphs, PrefillGraphs
from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.engine.sampling_params import SamplingParams
from tritonseek.engine.tokenizer import TextStream
from tritonseek.model.mla import AttentionBatch
from tritonseek.model.model import DeepseekForCausalLM


@dataclass
class Sequence:
    """One request in flight."""

    seq_id: int
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    stream: TextStream | None = None
    out_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.out_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def last_token(self) -> int:
        return self.out_ids[-1] if self.out_ids else self.prompt_ids[-1]


class ModelRunner:
    """Owns the cache of one ``generate`` call and runs steps of the model on it."""

    def __init__(self, model: DeepseekForCausalLM, cache: PagedLatentCache, device: torch.device,
                 graphs: DecodeGraphs | None = None, graph_verify: bool = False,
                 prefill_graphs: PrefillGraphs | None = None, graph_step: bool = False):
        if prefill_graphs is not None and prefill_graphs.cache is not cache:
            raise ValueError("prefill_graphs were captured over another cache")
        self.prefill_graphs = prefill_graphs
        self.model = model
        self.cache = cache
        self.device = device
        self.vocab_size = model.cfg.vocab_size
        if graphs is not None and graphs.cache is not cache:
            raise ValueError("graphs were captured over another cache")
        self.graphs = graphs
        # decode_tokens (MTP verify: seqlen_q = K+1) replays graphs too when set
        self.graph_verify = graph_verify and graphs is not None
        # greedy MTP steps as one graph replay each (engine/mtp_step.py); needs graph_verify
        self.graph_step = graph_step and self.graph_verify
        self.graph_steps = 0

    def _tensor(self, data, dtype) -> torch.Tensor:
        return torch.tensor(data, dtype=dtype, device=self.device)

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor, AttentionBatch, list[int]]:
        """Run every prompt through the model.

        Returns (logits of each prompt's last token [B, V] fp32, hidden states of every prompt
        token [T, H] (pre final norm), the AttentionBatch used, cu_seqlens as a list). With
        ``prefill_graphs`` attached and the prompts fitting a bucket, one graph replay runs it (hidden
        and the batch are then views of the graph's static buffers, valid until its next replay).
        """
        # Token ids, positions and cache slots are built as CPU tensors (array/arange/indexing, not
        # Python lists: a 4k-token prompt's lists cost ~2 ms of host time before the first kernel), packed
        # with cu_seqlens and the last-token rows into one int64 buffer and sent in ONE copy (pinned and
        # asynchronous on CUDA: no host sync, the host goes on launching the layers at once).
        if self.prefill_graphs is not None and self.prefill_graphs.fits([len(s.prompt_ids) for s in seqs]):
            for s in seqs:
                self.cache.ensure_capacity(s.seq_id, len(s.prompt_ids))
            slots = [self.cache.slots_tensor(s.seq_id, 0, len(s.prompt_ids)) for s in seqs]
            logits, hidden, batch, cu = self.prefill_graphs.run([s.prompt_ids for s in seqs], slots)
            return logits.float(), hidden, batch, cu
        ids, pos, slots, cu = [], [], [], [0]
        for s in seqs:
            n = len(s.prompt_ids)
            self.cache.ensure_capacity(s.seq_id, n)
            ids.append(torch.frombuffer(array.array("q", s.prompt_ids), dtype=torch.int64) if n else
                       torch.empty(0, dtype=torch.int64))
            pos.append(torch.arange(n, dtype=torch.int64))
            slots.append(self.cache.slots_tensor(s.seq_id, 0, n))
            cu.append(cu[-1] + n)
        T, B = cu[-1], len(seqs)
        cu_t = torch.tensor(cu, dtype=torch.int64)
        packed = torch.cat(ids + pos + slots + [cu_t, cu_t[1:] - 1])
        if self.device.type == "cuda":
            packed = packed.pin_memory().to(self.device, non_blocking=True)
        else:
            packed = packed.to(self.device)
        d_ids, d_pos, d_slots, d_cu, last = packed.split([T, T, T, B + 1, B])
        batch = AttentionBatch(
            is_prefill=True,
            slot_mapping=d_slots,
            cu_seqlens=d_cu.to(torch.int32),
            max_seqlen=max(len(s.prompt_ids) for s in seqs),
        )
        hidden = self.model(d_ids, d_pos, batch, self.cache.layers)
        return self.model.compute_logits(hidden[last]), hidden, batch, cu

    def decode_batch(self, seqs: list[Sequence], starts: list[int], seqlen_q: int) -> AttentionBatch:
        """AttentionBatch for ``seqlen_q`` new tokens per sequence at positions starts[i] … starts[i]+seqlen_q-1."""
        slots = []
        for s, p in zip(seqs, starts):
            self.cache.ensure_capacity(s.seq_id, p + seqlen_q)
            slots.extend(self.cache.slots(s.seq_id, p, p + seqlen_q))
        cache_seqlens = self._tensor([p + seqlen_q for p in starts], torch.int32)
        return AttentionBatch(
            is_prefill=False,
            slot_mapping=self._tensor(slots, torch.int64),
            block_table=self.cache.block_table([s.seq_id for s in seqs]),
            cache_seqlens=cache_seqlens,
            seqlen_q=seqlen_q,
            # this rank's heads (num_attention_heads / tp under tensor parallelism)
            mla_metadata=self.model.ops.mla_metadata(cache_seqlens, seqlen_q,
                                                     self.model.model.layers[0].self_attn.num_heads),
        )

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Feed each sequence's newest token; returns next-token logits [B, V] fp32."""
        logits, _ = self.decode_tokens(seqs, [[s.last_token] for s in seqs], [s.num_tokens - 1 for s in seqs])
        return logits

    @torch.inference_mode()
    def decode_tokens(self, seqs: list[Sequence], tokens: list[list[int]] | torch.Tensor, starts: list[int]):
        """Feed ``tokens[i]`` (same count s_q for every sequence; host lists or a device [B, s_q] int64
        tensor, e.g. drafts that never leave the GPU) at positions starts[i]…; the tokens are not in
        the cache yet. Returns (logits [B·s_q, V] fp32, hidden [B·s_q, H] pre-norm); with ``graph_verify``
        a captured (bucket, s_q) graph runs it and both are views of its static outputs (logits then in the
        model's dtype), valid until the next replay."""
        s_q = tokens.shape[1] if isinstance(tokens, torch.Tensor) else len(tokens[0])
        if self.graph_verify and self.graphs.fits(len(seqs), s_q):
            for s, p in zip(seqs, starts):
                self.cache.ensure_capacity(s.seq_id, p + s_q)
            self.graph_steps += 1
            # views of the graph's static outputs: valid until the next replay
            return self.graphs.step_tokens([s.seq_id for s in seqs], tokens, starts)
        batch = self.decode_batch(seqs, starts, s_q)
        if isinstance(tokens, torch.Tensor):
            ids = tokens.reshape(-1)
        else:
            ids = self._tensor([t for row in tokens for t in row], torch.int64)
        pos = self._tensor([p + j for p in starts for j in range(s_q)], torch.int64)
        hidden = self.model(ids, pos, batch, self.cache.layers)
        return self.model.compute_logits(hidden), hidden

    @torch.inference_mode()
    def decode_step(self, seqs: list[Sequence]) -> list[int]:
        """One decode step plus sampling: each sequence's next token.

        Replays the CUDA graph of the batch's bucket when graphs are attached and the batch fits
        (greedy batches take the graph's argmax; others sample eagerly from its logits); otherwise
        ``sample(seqs, decode(seqs))``. Both give the same tokens.
        """
        if self.graphs is None or not self.graphs.fits(len(seqs)):
            return self.sample(seqs, self.decode(seqs))
        starts = [s.num_tokens - 1 for s in seqs]
        for s, p in zip(seqs, starts):
            self.cache.ensure_capacity(s.seq_id, p + 1)
        tokens, logits = self.graphs.step([s.seq_id for s in seqs], [s.last_token for s in seqs], starts)
        self.graph_steps += 1
        if all(s.params.temperature == 0 for s in seqs):
            return tokens.tolist()
        return self.sample(seqs, logits)

    def sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Pick one token per sequence with its own SamplingParams and generator."""
        B, V = logits.shape
        if all(s.params.temperature == 0 for s in seqs):
            # Greedy batch: argmax (first maximal index = lowest id on ties, as the sampler does).
            return logits.argmax(dim=-1).tolist()
        temperature = self._tensor([float(s.params.temperature) for s in seqs], torch.float32)
        top_k = self._tensor([s.params.top_k for s in seqs], torch.int32)
        top_p = self._tensor([float(s.params.top_p) for s in seqs], torch.float32)
        noise = torch.ones(B, V, dtype=torch.float32, device=self.device)
        for i, s in enumerate(seqs):
            if s.params.temperature > 0:
                noise[i].exponential_(generator=s.generator)
        tokens = self.model.ops.sample(logits.float(), temperature, top_k, top_p, noise)
        return tokens.tolist()
