"""Offline generation API in the spirit of vLLM's ``LLM.generate``.

    from tritonseek import LLM, SamplingParams
    llm = LLM()                                   # embedded default model, or LLM("path/or/hf-id")
    outs = llm.generate(["def add(a, b):"], SamplingParams(max_new_tokens=16))
    print(outs[0].text, llm.last_stats.tokens_per_s)
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from tritonseek.engine.cuda_graph import DEFAULT_MAX_BATCH, DecodeGraphs
from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.engine.runner import ModelRunner, Sequence
from tritonseek.engine.speculative import MTPDrafter, step_plan
from tritonseek.engine.sampling_params import GenerationStats, RequestOutput, SamplingParams
from tritonseek.engine.tokenizer import TextTokenizer
from tritonseek.kernels._utils import check_bool, check_int, interpreter_active, is_int_arg
from tritonseek.model.config import ConfigError, ModelConfig
from tritonseek.model.loader import load_model
from tritonseek.model.mla import AttentionBatch
from tritonseek.model.ops import BACKENDS, Ops
from tritonseek.parallel import TP

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "default_model"


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local folder nor in the local Hugging Face cache."""


def resolve_model_path(model: str | Path | None) -> Path:
    """A checkpoint folder: ``None`` → the embedded default; a folder path; or an HF id from the local cache.

    Raises:
        ModelNotFoundError: not a folder and not in the local HF cache (nothing is downloaded), or an empty
            name (``Path("")`` is the current folder: ``-m "$MODEL"`` with MODEL unset loaded whatever checkpoint
            the current folder held; tester21 #6).
    """
    if model is None:
        return DEFAULT_MODEL_DIR
    if not str(model).strip():
        raise ModelNotFoundError(f"model {str(model)!r} is empty: pass a checkpoint folder or a Hugging Face id, or "
                                 "leave it out (None / no --model) for the embedded default model")
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelNotFoundError(f"{p} has no config.json; is it a Hugging Face checkpoint folder?")
        return p
    if p.exists():
        raise ModelNotFoundError(f"{p} is a file; --model takes a checkpoint folder or a Hugging Face id")
    name = str(model)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model {name!r} is neither a folder nor a Hugging Face id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        # owner/name is also how a mistyped relative folder looks: say both readings (tester21 #16)
        raise ModelNotFoundError(
            f"model {name!r} is no folder here ({p.absolute()} does not exist) and not in the local Hugging Face "
            f"cache; download it first (e.g. `hf download {name}`) or pass an existing local folder"
        ) from None


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _check_dtype(dtype) -> torch.dtype | None:
    """None, or one of torch.float32/bfloat16/float16 (given as the dtype or its name, "torch." prefix allowed)."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in _DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise (ValueError if isinstance(dtype, (str, torch.dtype)) else TypeError)(
        f"dtype={dtype!r} is not supported; use torch.float32, torch.bfloat16 or torch.float16 "
        "(or 'float32', 'bfloat16', 'float16')")


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={str(device)!r} is not supported; use 'cpu' or 'cuda'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} is not supported; use 'cpu' or 'cuda'")
    if device.type == "cpu" and device.index is not None:  # torch accepts cpu:1 and runs on the one CPU device
        raise ValueError(f"device={str(device)!r}: the CPU device takes no index; use 'cpu'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but torch sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def _check_graph_capturable(cfg: ModelConfig, quantize_fp8: bool) -> None:
    """Raise ValueError when CUDA-graph decode cannot run this checkpoint: routed experts kept bf16/fp32 (no
    ``quantization_config`` and ``quantize_fp8`` off) run MoE.experts_reference, which reads the per-expert token counts
    back to the host; that copy cannot be captured (the first decode capture failed with "Cannot copy between CPU and
    CUDA tensors during CUDA graph capture", H200 s26, a tiny bf16 V3). The Triton grouped GEMMs are FP8 only."""
    if cfg.is_moe and cfg.quantization_config is None and not quantize_fp8:
        raise ValueError("this checkpoint's routed experts are not FP8 (config.json has no quantization_config), and "
                         "unquantized experts cannot run under CUDA graphs (their expert loop reads token counts on "
                         "the host): pass quantize_fp8=True (CLI --quantize-fp8: FP8 experts on the Triton grouped "
                         "GEMMs, 128x128 block scales) or enforce_eager=True (CLI --eager: bf16 experts, eager decode)")


class LLM:
    """Load a model once, then generate for lists of prompts.

    Args:
        model: checkpoint folder, HF id (resolved offline from the local cache) or None for the
            embedded default model.
        device: "cpu" | "cuda" | "cuda:N" (default: cuda when available); "cpu:N" is refused.
        backend: "triton" | "reference" (default: triton on CUDA, reference on CPU). The triton
            backend on CPU needs TRITON_INTERPRET=1 (Triton's interpreter: slow; for tests), and runs bf16.
        dtype: activation dtype, torch.float32 / torch.bfloat16 / torch.float16 or its name ("float32",
            "fp32", "bfloat16", "bf16", "float16", "fp16"); default bf16 on CUDA or with the triton backend,
            fp32 for the reference backend on CPU. The triton backend's kernels take bf16 or fp16, never fp32.
        quantize_fp8: quantize a bf16 checkpoint's linears (experts included) to 128×128 block FP8 at load.
        page_size: tokens per latent-cache block, a power of two from 1 to 256.
        progress: show a progress bar while loading shards.
        tp: tensor/expert-parallel rank (``tritonseek.parallel.init_from_env`` under torchrun); every
            rank runs the same ``generate`` call in lockstep and gets the same tokens.
        enforce_eager: never use CUDA graphs. By default a CUDA model on the triton backend (also each
            rank under ``tp``) replays a captured graph per batch bucket for each plain decode step (see
            :mod:`tritonseek.engine.cuda_graph`); the latent cache is then kept between ``generate``
            calls (grown when a call needs more) so the graphs stay valid. Prefill and CPU runs are
            always eager. Greedy MTP steps replay one graph per (bucket, K) for the whole step (drafts,
            verify forward, verification, MTP pass; :mod:`tritonseek.engine.mtp_step`) with one
            device→host copy per step; the attribute ``graph_step = False`` runs them step by step (MTP
            forwards and the verify forward as separate graphs, as sampling batches do), and
            ``graph_verify = False`` keeps every MTP forward eager.
        max_graph_batch: largest batch that decodes through graphs (larger batches run eagerly), an int ≥ 1.
    Argument types follow the launchers' rule (``tritonseek.kernels._utils``), checked before anything is loaded:
    page_size and max_graph_batch ints or numpy integers (not bools or floats), quantize_fp8 / progress /
    enforce_eager bools or numpy bools (not 0/1 or strings), model a str / path / None, device a str /
    torch.device / None, backend a str / None; another type is a TypeError naming the argument.
    Raises:
        ModelNotFoundError, ConfigError, CheckpointError, TokenizerError, ValueError (bad argument value; also
        a bf16/fp32 MoE checkpoint on CUDA with CUDA graphs on and quantize_fp8 off: see ``_check_graph_capturable``),
        TypeError (bad argument type).
    """

    def __init__(self, model: str | Path | None = None, *, device: str | torch.device | None = None,
                 backend: str | None = None, dtype: torch.dtype | None = None, quantize_fp8: bool = False,
                 page_size: int = 64, progress: bool = False, tp: TP | None = None, enforce_eager: bool = False,
                 max_graph_batch: int = DEFAULT_MAX_BATCH):
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a str, a path or None, got {type(model).__name__} {model!r}")
        if device is not None and not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a str, a torch.device or None, got {type(device).__name__} {device!r}")
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend must be a str or None, got {type(backend).__name__} {backend!r}")
        quantize_fp8 = check_bool("quantize_fp8", quantize_fp8)
        progress = check_bool("progress", progress)
        enforce_eager = check_bool("enforce_eager", enforce_eager)
        page_size = check_int("page_size", page_size)
        if not 1 <= page_size <= 256 or page_size & (page_size - 1):  # one message with both bounds (h3tester s24 #8)
            raise ValueError(f"page_size={page_size} must be a power of two between 1 and 256")
        max_graph_batch = check_int("max_graph_batch", max_graph_batch, 1)
        dtype = _check_dtype(dtype)
        self.path = resolve_model_path(model)
        self.device = _pick_device(device)
        if backend is None:
            backend = "triton" if self.device.type == "cuda" else "reference"
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
        if backend == "triton" and self.device.type == "cpu" and not interpreter_active():
            raise ValueError("backend='triton' needs a CUDA device; use backend='reference' (--backend reference) "
                             "on CPU (or run the kernels through Triton's interpreter, slowly: TRITON_INTERPRET=1 in "
                             "the environment)")
        if backend == "triton":  # CLI --backend triton --device cpu under the interpreter ended in a kernel dtype error
            if dtype is None:
                dtype = torch.bfloat16
            elif dtype not in (torch.bfloat16, torch.float16):
                raise ValueError(f"dtype={dtype} is not supported by backend='triton' (torch.bfloat16 or "
                                 "torch.float16 activations); use backend='reference' for torch.float32")
        self.page_size = page_size
        self.enforce_eager = enforce_eager
        self.max_graph_batch = max_graph_batch
        self.graph_verify = True  # MTP verify through (bucket, K+1) graphs (token-identical on the H200)
        self.graph_step = True  # greedy MTP: whole steps as one (bucket, K) graph each (engine/mtp_step.py)
        self._cache: PagedLatentCache | None = None  # kept between calls only while graphs are used
        self._graphs: DecodeGraphs | None = None
        # held by the generate call that uses the kept cache and graphs: a call made while another runs (from
        # on_text, or another thread) got the same cache, reset under the running call (h3tester s24 #4)
        self._kept_lock = threading.Lock()
        self.ops = Ops(backend)
        if tp is not None and not isinstance(tp, TP):
            raise TypeError(f"tp must be a tritonseek.parallel.TP (from init_from_env) or None, got {type(tp).__name__}")
        self.tp = tp
        if self.uses_cuda_graphs:  # before loading: a V2-Lite-sized load took minutes before the capture failed
            _check_graph_capturable(ModelConfig.from_file(self.path), quantize_fp8)
        self.model = load_model(self.path, ops=self.ops, device=self.device, dtype=dtype,
                                quantize_fp8=quantize_fp8, progress=progress, tp=tp)
        self.config = self.model.cfg
        self.tokenizer = TextTokenizer(self.path)
        self.eos_token_ids = self._eos_ids()
        self.is_default_model = self.path == DEFAULT_MODEL_DIR
        # the embedded model's card (its note); another checkpoint's tritonseek_model.json is not ours to read: an
        # unreadable one broke loading with a message naming no file (tester21 #12)
        card = self.path / "tritonseek_model.json"
        self.model_info = json.loads(card.read_text(encoding="utf-8")) if self.is_default_model and card.is_file() \
            else {}
        self.last_stats = GenerationStats()

    @property
    def backend(self) -> str:
        return self.ops.backend

    @property
    def uses_cuda_graphs(self) -> bool:
        """Plain decode steps replay CUDA graphs: CUDA + triton backend + not enforce_eager (under tensor
        parallelism too: the ranks run in lockstep, so they capture and replay the same graphs in the same order)."""
        return (self.device.type == "cuda" and self.ops.is_triton and not self.enforce_eager
                and not interpreter_active())

    def _cache_and_graphs(self, blocks: int, kept: bool) -> tuple[PagedLatentCache, DecodeGraphs | None]:
        """The latent cache for one call (≥ ``blocks`` blocks) and, when graphs are on, its graphs. ``kept``: this
        call holds ``_kept_lock`` (graphs on and no other call running); without it the call gets a cache of its
        own and no graphs (it runs eagerly), as the kept ones belong to the running call."""
        cfg = self.config
        if not self.uses_cuda_graphs or not kept:
            if not self.uses_cuda_graphs:
                self._cache = self._graphs = None
            cache = PagedLatentCache(self.model.num_cache_layers, blocks, self.page_size,
                                     cfg.kv_lora_rank + cfg.qk_rope_head_dim, self.model.dtype, self.device)
            return cache, None
        if (self._cache is None or self._cache.num_blocks < blocks
                or self._graphs is None or self._graphs.max_batch != self.max_graph_batch):
            if self._graphs is not None:
                self._graphs.close()
            self._cache = self._graphs = None
            cache = PagedLatentCache(self.model.num_cache_layers, blocks, self.page_size,
                                     cfg.kv_lora_rank + cfg.qk_rope_head_dim, self.model.dtype, self.device)
            # a sequence never holds more blocks than the cache has, nor more than max positions need
            width = min(blocks, -(-(cfg.max_position_embeddings + 8) // self.page_size))
            self._graphs = DecodeGraphs(self.model, cache, width, self.max_graph_batch)
            self._cache = cache
        self._cache.reset()
        return self._cache, self._graphs

    def _eos_ids(self) -> set[int]:
        ids = set(self.config.eos_token_ids)
        gen = self.path / "generation_config.json"
        if gen.is_file():
            try:
                raw = json.loads(gen.read_text(encoding="utf-8"))
            except (ValueError, OSError) as err:
                raise ValueError(f"cannot read {gen}: {err}") from None
            if not isinstance(raw, dict):  # a list was ignored silently (config.json's non-object is refused)
                raise ConfigError(f"{gen} must hold a JSON object, got {type(raw).__name__}")
            e = raw.get("eos_token_id")
            is_int = lambda i: isinstance(i, int) and not isinstance(i, bool)  # noqa: E731  (true is no token id)
            if not (e is None or is_int(e) or (isinstance(e, list) and all(is_int(i) for i in e))):
                raise ValueError(f"{gen}: eos_token_id must be an int or a list of ints, got {e!r}")
            vocab = self.config.vocab_size
            for i in [e] if is_int(e) else (e or []):  # as config.json's eos_token_id: an id the model can emit
                if not 0 <= i < vocab:
                    raise ValueError(f"{gen}: eos_token_id={e!r} is outside the vocabulary (vocab_size={vocab})")
            ids.update([e] if is_int(e) else (e or []))
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        """Teacher-forced next-token logits of one sequence: [len(token_ids), vocab] fp32.

        token_ids: a non-empty list or tuple of ints (numpy integers too) in [0, vocab_size), at most
        max_position_embeddings of them. One prefill forward with no latent cache (nothing is kept); position i's
        row scores token i+1. Used for held-out loss, backend comparisons and parallel-vs-single checks.
        Raises TypeError naming token_ids (and the index) for another container or a non-int entry (a bool, a
        float: 1.5 was truncated to 1), ValueError for an empty or too long sequence or an id outside the
        vocabulary (that was torch's "index out of range in self", naming nothing).
        """
        if not isinstance(token_ids, (list, tuple)):
            raise TypeError(f"token_ids must be a list of ints, got {type(token_ids).__name__}")
        if not token_ids:
            raise ValueError("token_ids is empty")
        vocab, max_pos = self.config.vocab_size, self.config.max_position_embeddings
        for i, t in enumerate(token_ids):
            if not is_int_arg(t):
                raise TypeError(f"token_ids[{i}] must be an int, got {type(t).__name__} {t!r}")
            if not 0 <= t < vocab:
                raise ValueError(f"token_ids[{i}]={int(t)} is outside the vocabulary [0, {vocab})")
        if len(token_ids) > max_pos:  # positions past the RoPE range the checkpoint was made for (generate refuses)
            raise ValueError(f"token_ids has {len(token_ids)} tokens, more than max_position_embeddings={max_pos}")
        token_ids = [int(t) for t in token_ids]
        n, dev = len(token_ids), self.device
        batch = AttentionBatch(True, torch.full((n,), -1, dtype=torch.int64, device=dev),
                               cu_seqlens=torch.tensor([0, n], dtype=torch.int32, device=dev), max_seqlen=n)
        ids = torch.tensor(token_ids, dtype=torch.int64, device=dev)
        h = self.model(ids, torch.arange(n, device=dev), batch, [None] * self.model.num_cache_layers)
        return self.model.compute_logits(h)

    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of ``prompt`` (a str) as generate feeds them: the chat template applied when ``chat`` (a bool),
        else plain encoding with the tokenizer's BOS. TypeError naming prompt / chat for another type."""
        if not isinstance(prompt, str):  # encode(5) was an AttributeError inside the tokenizer (tester21 #7)
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        check_bool("chat", chat)
        return self.tokenizer.apply_chat_template(prompt) if chat else self.tokenizer.encode(prompt)

    def validate_requests(self, prompts: str | list[str], params: SamplingParams | list[SamplingParams] | None = None,
                          *, chat: bool = False, mtp: int = 0) -> tuple[list[list[int]], list[SamplingParams]]:
        """Check a request without running the model; returns (token ids per prompt, params per prompt). The params
        are copies taken here: a change to the caller's objects while ``generate`` runs does not reach its requests.

        Raises TypeError for prompts that are neither a str nor a list (or tuple) of str (None included), chat not a
        bool (or numpy bool; 1 is not taken for True), mtp not an int (numpy integers count, a bool does not), and
        ValueError/TypeError (naming the prompt index, from 0) for: mtp outside 0–4 or a
        checkpoint without MTP weights, an empty prompt list, a non-str prompt, params that are not one
        SamplingParams or a list (or tuple) of one per prompt, stop_token_ids outside the vocabulary, a prompt empty after tokenization or
        holding a token id outside the vocabulary (a tokenizer larger than the model), or
        prompt + max_new_tokens > max_position_embeddings.
        """
        check_bool("chat", chat)
        if not is_int_arg(mtp):
            raise TypeError(f"mtp must be an int between 0 and 4, got {type(mtp).__name__} {mtp!r}")
        if mtp:
            if not 1 <= mtp <= 4:
                raise ValueError(f"mtp={mtp!r} must be an int between 1 and 4")
            if not len(self.model.mtp):
                # the f was missing: the placeholder was printed literally (tester21 #16)
                why = ("config.json sets num_nextn_predict_layers to 0" if not self.config.num_nextn_predict_layers
                       else "this checkpoint has none")
                raise ValueError(f"--mtp needs the checkpoint's MTP layer (model.layers."
                                 f"{self.config.num_hidden_layers}.*), and {why}")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):  # None was "prompts is empty" (tester s20)
            raise TypeError(f"prompts must be a str or a list of str, got {type(prompts).__name__}")
        if not prompts:
            raise ValueError("prompts is empty")
        if params is None:
            params = SamplingParams()
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)  # as prompts: a tuple too
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        max_pos = self.config.max_position_embeddings
        vocab = self.config.vocab_size
        encoded = []
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            if not isinstance(p, SamplingParams):
                raise TypeError(f"params for prompt {i} must be a SamplingParams, got {type(p).__name__}")
            # a snapshot: the engine read the caller's object while it ran, so a change made during the call (from
            # on_text, another thread) altered requests in flight (tester23 #8)
            plist[i] = p = copy.copy(p)
            bad = [t for t in p.stop_token_ids if t >= vocab]
            if bad:
                raise ValueError(f"stop_token_ids {bad} of prompt {i} are outside the vocabulary (size {vocab})")
            if not isinstance(prompt, str):
                raise TypeError(f"prompt {i} must be a str, got {type(prompt).__name__}")
            ids = self.encode(prompt, chat)
            if not ids:
                why = "the tokenizer has no BOS token" if self.tokenizer.bos_token_id is None else \
                    "tokenizer_config.json says add_bos_token: false"  # said "the model has no BOS" (h2tester s25)
                raise ValueError(f"prompt {i} is empty after tokenization ({why})")
            # a tokenizer with ids past the model's embedding (an added token): the embedding lookup was an
            # IndexError traceback on CPU, a device-side assert on CUDA (tester21 #3)
            big = next((t for t in ids if not 0 <= t < vocab), None)
            if big is not None:
                raise ValueError(f"prompt {i} has token id {big} outside the vocabulary (vocab_size={vocab}): the "
                                 "tokenizer knows more ids than the model's embedding has rows")
            if len(ids) + p.max_new_tokens > max_pos:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens={p.max_new_tokens} that exceeds "
                    f"max_position_embeddings={max_pos}"
                )
            encoded.append(ids)
        return encoded, plist

    def generate(self, prompts: str | list[str], params: SamplingParams | list[SamplingParams] | None = None, *,
                 chat: bool = False, on_text: Callable[[int, str], None] | None = None,
                 mtp: int = 0) -> list[RequestOutput]:
        """Generate for each prompt; returns one :class:`RequestOutput` per prompt, in order.

        on_text(i, delta) (a callable or None) is called with each new piece of prompt i's text as soon as its
        UTF-8 is complete (streaming); a sequence's last piece also carries an incomplete UTF-8 tail as U+FFFD,
        so the pieces of prompt i add up to its ``RequestOutput.text``. mtp=K (1–4) decodes speculatively with K drafts per step from the
        checkpoint's MTP layer (acceptance in ``last_stats.extra``). Raises before any model work what
        ``validate_requests`` raises (e.g. ValueError for a prompt empty after tokenization (an empty string
        with a BOS token is one token, not empty), prompt + max_new_tokens exceeding max_position_embeddings, or
        mtp asked of a checkpoint without MTP weights), and TypeError for an on_text that is not callable.
        With CUDA graphs on, a call made while another one runs on this LLM (from ``on_text``, or another thread)
        runs without graphs on a latent cache of its own: the kept cache and graphs stay the running call's.
        """
        if on_text is not None and not callable(on_text):  # on_text=5 failed after the prefill ran (tester21 #7)
            raise TypeError(f"on_text must be a callable (i, delta) or None, got {type(on_text).__name__}")
        encoded, plist = self.validate_requests(prompts, params, chat=chat, mtp=mtp)
        chat, mtp = bool(chat), int(mtp)  # numpy bool / integer → Python (validated above)
        if isinstance(prompts, str):
            prompts = [prompts]
        seeds = [p.seed if p.seed is not None or p.temperature <= 0 else int(torch.randint(0, 2**62, (1,)).item())
                 for p in plist]
        if self.tp is not None:
            # every rank samples from the same (gathered) logits: it must draw with rank 0's seeds, or the
            # ranks' tokens, and with them their caches, diverge when no seed is given
            seeds = self.tp.broadcast_object(seeds)
        seqs = []
        for i, (prompt, ids, p, seed) in enumerate(zip(prompts, encoded, plist, seeds)):
            gen = None
            if p.temperature > 0:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(seed)
            seqs.append(Sequence(i, prompt, ids, p, gen, stream=self.tokenizer.stream()))
        return self._run(seqs, on_text, mtp)

    def _run(self, seqs: list[Sequence], on_text, mtp: int = 0) -> list[RequestOutput]:
        kept = self.uses_cuda_graphs and self._kept_lock.acquire(blocking=False)
        try:
            return self._run_on(seqs, on_text, mtp, kept)
        finally:
            if kept:
                self._kept_lock.release()

    def _run_on(self, seqs: list[Sequence], on_text, mtp: int, kept: bool) -> list[RequestOutput]:
        blocks = sum(-(-(len(s.prompt_ids) + s.params.max_new_tokens + mtp) // self.page_size) for s in seqs)
        cache, graphs = self._cache_and_graphs(blocks, kept)
        capture0 = graphs.capture_s if graphs is not None else 0.0
        runner = ModelRunner(self.model, cache, self.device, graphs, graph_verify=self.graph_verify,
                             graph_step=self.graph_step)
        stats = GenerationStats(prompt_tokens=sum(len(s.prompt_ids) for s in seqs),
                                backend=self.backend, device=str(self.device))
        t0 = time.perf_counter()
        logits, hidden, batch, cu = runner.prefill(seqs)
        self._accept(seqs, runner.sample(seqs, logits), on_text)
        drafter = None
        if mtp:
            drafter = MTPDrafter(runner, mtp)
            h_last, first = drafter.after_prefill(seqs, hidden, batch, cu)
        _sync(self.device)
        t1 = time.perf_counter()
        stats.prefill_s = t1 - t0
        live = [s for s in seqs if not s.finished]
        if drafter is not None:
            # Index with kept positions (index_select), not a bool mask (which syncs to count).
            keep = torch.tensor([i for i, s in enumerate(seqs) if not s.finished], dtype=torch.int64,
                                device=self.device)
            self._speculate(drafter, live, h_last[keep], first[keep], on_text, stats)
            live = []
        while live:
            self._accept(live, runner.decode_step(live), on_text)
            stats.decode_steps += 1
            for s in live:
                if s.finished:
                    cache.release(s.seq_id)
            live = [s for s in live if not s.finished]
        _sync(self.device)
        stats.decode_s = time.perf_counter() - t1
        stats.new_tokens = sum(len(s.out_ids) for s in seqs)
        stats.extra.update(graph_steps=runner.graph_steps,
                           graph_capture_s=(graphs.capture_s - capture0) if graphs is not None else 0.0)
        self.last_stats = stats
        return [
            RequestOutput(s.prompt, s.prompt_ids, s.out_ids, self.tokenizer.decode(s.out_ids), s.finish_reason)
            for s in seqs
        ]

    def _speculate(self, drafter: MTPDrafter, live: list[Sequence], h_last, first, on_text, stats) -> None:
        fused = drafter.step_graphs(live)
        if fused is not None:  # greedy on CUDA graphs: each step one replay + one copy to the host
            self._speculate_graphs(drafter, fused, live, h_last, first, on_text, stats)
            live = []
        while live:
            # one verify batch, each sampled row drafting its own limit (the rest masked: step_plan), so a sequence's
            # seeded draws do not depend on the batch; more batches only near max_position_embeddings
            plan = step_plan(live, drafter.k, self.config.max_position_embeddings)
            if len(plan) == 1:
                h_last, first = self._spec_step(drafter, live, h_last, first, *plan[0][::2], on_text, stats)
            else:
                h_new, first_new = torch.empty_like(h_last), torch.empty_like(first)
                for k, rows, lim in plan:
                    idx = torch.tensor(rows, dtype=torch.int64, device=self.device)
                    h_new[idx], first_new[idx] = self._spec_step(drafter, [live[i] for i in rows], h_last[idx],
                                                                 first[idx], k, lim, on_text, stats)
                h_last, first = h_new, first_new
            for s in live:
                if s.finished:  # after the MTP pass, which still writes (and allocates for) every row
                    drafter.runner.cache.release(s.seq_id)
            kept = [i for i, s in enumerate(live) if not s.finished]
            if len(kept) < len(live):
                keep = torch.tensor(kept, dtype=torch.int64, device=self.device)
                live = [live[i] for i in kept]
                h_last, first = h_last[keep], first[keep]
        stats.extra.update(
            mtp=drafter.k,
            # None, not 0.0, when nothing was drafted / no step ran (max_new_tokens <= 2): 0.00 read as "every draft
            # rejected" (h3tester s24 #7)
            acceptance=drafter.accepted / drafter.proposed if drafter.proposed else None,
            tokens_per_step=drafter.emitted / drafter.seq_steps if drafter.seq_steps else None,
            # the counters behind the two rates (the CLI adds up the stats of consecutive calls)
            proposed=drafter.proposed, accepted=drafter.accepted, emitted=drafter.emitted, seq_steps=drafter.seq_steps,
        )

    def _spec_step(self, drafter: MTPDrafter, live: list[Sequence], h_last, first, k: int, lim, on_text, stats):
        """One eager MTP step of ``live`` with k drafts each, row i's past lim[i] masked (``step_plan``; lim None:
        none masked, and k = 0 (greedy only) is a plain decode step); returns the MTP pass's (hidden, next first
        drafts)."""
        starts = [s.num_tokens - 1 for s in live]
        if k >= 1:
            drafts = drafter.draft(live, h_last, first, k)
            out, num_acc, target_hidden = drafter.verify(live, drafts, lim)
        else:
            logits, target_hidden = drafter.runner.decode_tokens(live, [[s.last_token] for s in live], starts)
            out = torch.tensor(drafter.runner.sample(live, logits), device=self.device)[:, None]
            num_acc = torch.zeros(len(live), dtype=torch.int32, device=self.device)
            target_hidden = target_hidden[:, None]
        self._take_step(drafter, live, k, out.tolist(), num_acc.tolist(), on_text, stats, release=False,
                        proposed=None if lim is None else sum(min(k, n) for n in lim))
        return drafter.mtp_pass(live, starts, out, num_acc, target_hidden)

    def _speculate_graphs(self, drafter: MTPDrafter, fused, live: list[Sequence], h_last, first, on_text,
                          stats) -> None:
        """Greedy MTP steps as whole-step graph replays (:class:`~tritonseek.engine.mtp_step.MTPStepGraphs`).

        Step t+1 is launched before step t's results are read (the host's bookkeeping overlaps the GPU) when that
        is safe whatever step t emits: no sequence of the launch has finished, and each can take K more drafts
        after step t's K+1 tokens without passing its max_new_tokens (so never max_position_embeddings). Otherwise
        the next launch waits for the results, drops the finished sequences (their rows are compacted, their
        pages freed) and takes K = min(K, max_new_tokens − emitted − 1) over the live ones (greedy: the tokens
        do not depend on K; the step-by-step path masks each row at its own limit instead). A sequence that finished at step t has its row in the already-launched step t+1: that row is
        computed and ignored (its freed pages are reused only by launches after it, in stream order).
        """
        K = drafter.k
        fused.load(live, h_last, first)
        cur = fused.launch(live, min([K] + [s.params.max_new_tokens - len(s.out_ids) - 1 for s in live]))
        while cur is not None:
            nxt = None
            if fused.lookahead and all(not s.finished and s.params.max_new_tokens - len(s.out_ids) - cur.k - 2 >= K
                                       for s in cur.seqs):
                nxt = fused.launch(cur.seqs, K, pending=cur.k + 1)
            out, num_acc = fused.wait(cur)
            seqs = [s for s in cur.seqs if not s.finished]
            if len(seqs) < len(cur.seqs):  # rows of sequences that finished before this step: ignored
                rows = [i for i, s in enumerate(cur.seqs) if not s.finished]
                out, num_acc = out[rows], num_acc[rows]
            drafter.runner.graph_steps += 1
            self._take_step(drafter, seqs, cur.k, out.tolist(), num_acc.tolist(), on_text, stats)
            if nxt is not None:
                cur = nxt
                continue
            kept = [i for i, s in enumerate(cur.seqs) if not s.finished]
            if not kept:
                break
            fused.compact(kept)
            live = [cur.seqs[i] for i in kept]
            cur = fused.launch(live, min([K] + [s.params.max_new_tokens - len(s.out_ids) - 1 for s in live]))

    def _take_step(self, drafter: MTPDrafter, live: list[Sequence], k: int, rows: list[list[int]], acc: list[int],
                   on_text, stats, release: bool = True, proposed: int | None = None) -> None:
        """Host bookkeeping of one verify step: emit each sequence's a+1 tokens (EOS / stop / max_new_tokens end it
        inside the run, later tokens dropped), count the statistics, free the pages of finished sequences
        (``release``)."""
        stats.decode_steps += 1
        drafter.steps += 1
        drafter.proposed += k * len(live) if proposed is None else proposed  # masked drafts are not proposed
        drafter.seq_steps += len(live)
        drafter.accepted += sum(acc)
        for s, row, a in zip(live, rows, acc):
            drafter.emitted += self._accept_run(s, row[: a + 1], on_text)
            if release and s.finished:
                drafter.runner.cache.release(s.seq_id)

    def _accept(self, seqs: list[Sequence], tokens: list[int], on_text) -> None:
        for s, t in zip(seqs, tokens):
            self._accept_run(s, (t,), on_text)

    def _accept_run(self, s: Sequence, tokens, on_text) -> int:
        """Append tokens to an unfinished sequence until EOS / a stop token ("stop", kept) or max_new_tokens
        ("length"); later tokens are dropped. Streams the text of every kept token, a stop token included, so the
        streamed text equals ``RequestOutput.text`` (both skip special tokens such as EOS). Returns the count kept."""
        eos, p, out = self.eos_token_ids, s.params, s.out_ids
        kept = 0
        for t in tokens:
            out.append(t)
            kept += 1
            stop = (t in eos and not p.ignore_eos) or t in p.stop_token_ids
            if stop:
                s.finish_reason = "stop"
            elif len(out) >= p.max_new_tokens:
                s.finish_reason = "length"
            if on_text is not None:
                delta = s.stream.step(t)
                if s.finish_reason is not None:  # flush an incomplete UTF-8 tail as the final text has it
                    delta += s.stream.finish(out)
                if delta:
                    on_text(s.seq_id, delta)
            if s.finish_reason is not None:
                break
        return kept


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
