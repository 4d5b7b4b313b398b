"""Tensor and expert parallelism over torch.distributed (DeepSeek-V3 inference/model.py's scheme).

Activations are replicated on every rank. Attention heads, dense-MLP/shared-expert columns and the
vocabulary are split across ranks (column-parallel in, row-parallel out + all-reduce); routed
experts are split by expert id (rank r holds experts [r·E/N, (r+1)·E/N)), every rank computes its
own experts' share for all tokens and one all-reduce sums the shares, so a foreign expert slot
contributes exactly 0 and a rank whose experts got no token still joins every collective.

Launch with ``torchrun --nproc-per-node N`` (NCCL on CUDA, one GPU per rank; gloo on CPU); ``TP(…)``
is passed to the model explicitly, never held in a global. On CUDA the collectives are captured in the
decode-step CUDA graphs like any kernel (every rank captures and replays the same graphs in the same
order, as the ranks run ``generate`` in lockstep).

Numerics: TP is not bitwise equal to one process. The reference backend (fp32 or bf16) agrees to ~1e-6 / ~4e-3
relative (its bf16 error against fp32 is the same 4e-3 either way). The triton backend quantizes activations to FP8
before each FP8 GEMM, and a partial sum changed by an all-reduce moves elements across e4m3 rounding steps or flips a
near-tied expert choice. Its logits then differ from TP1 by as much as either differs from the fp32 truth, and greedy
tokens may flip at near-ties. Measured on CPU (gloo, Triton interpreter, bf16, embedded model, a 201-token prompt,
session 17), logits relative to the fp32 reference at the first 4 generated positions (prefill + 3 decode steps):
TP1 2.5e-2 / 9.4e-2 / 3.0e-2 / 2.0e-2, TP2 2.3e-2 / 2.3e-2 / 3.0e-2 / 1.2e-1.
The first differing token (position 3) was a near-tie: top-2 gap 0.19 in fp32, 0.31 in TP1, reversed by 0.09 in TP2.
On the H200, tokens flipped at gaps 0.34 and 0.44. tests/parallel asserts argmax equality only where TP1's gap
exceeds 1.0.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import os
import time
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tritonseek.kernels._utils import is_int_arg


@dataclass(frozen=True)
class TP:
    """This process's place in the tensor-parallel group (rank 0 … world_size-1).

    rank / world_size: ints or numpy integers (stored as int; the scalar rule of ``tritonseek.kernels._utils``);
    another type is a TypeError, world_size < 1 or a rank outside [0, world_size) a ValueError.
    """

    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        for name, v in (("rank", self.rank), ("world_size", self.world_size)):
            if not is_int_arg(v):  # np.int64(0) was refused (h5 s21)
                raise TypeError(f"TP {name} must be an int, got {type(v).__name__}")
            object.__setattr__(self, name, int(v))  # frozen: the one place it is set
        if self.world_size < 1:
            raise ValueError(f"TP world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"TP rank must be in [0, world_size={self.world_size}), got {self.rank}")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (any picklable value) on every rank; collective (every rank must call it)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def split(self, n: int, what: str) -> tuple[int, int]:
        """[start, end) of this rank's 1/world_size share of ``n`` items; raises if n does not divide."""
        if n % self.world_size:
            raise ValueError(f"{what}={n} is not divisible by the tensor-parallel size {self.world_size}")
        k = n // self.world_size
        return self.rank * k, (self.rank + 1) * k

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` (any shape/dtype) over the ranks, in place; returns it (no-op on one rank)."""
        if self.enabled:
            dist.all_reduce(x)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``x`` along the last dimension (rank order)."""
        if not self.enabled:
            return x
        x = x.contiguous()
        if x.is_cuda:  # one NCCL gather into [world, *x.shape], then ranks moved next to the last dim
            out = x.new_empty((self.world_size, *x.shape))
            dist.all_gather_into_tensor(out, x)
            return out.movedim(0, -2).reshape(*x.shape[:-1], -1)
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=-1)


@torch.no_grad()
def broadcast_replicated_(model: torch.nn.Module, tp: TP, src: int = 0) -> int:
    """Make every parameter ``model`` holds whole on each rank (norms, router, replicated linears, …) equal to
    rank ``src``'s copy; the sharded ones (a module's ``shard``, an expert-parallel MoE's expert stacks) stay.

    For models filled with random values on each rank (benchmarks, tests): then every rank computes the same
    replicated activations and routing, as with weights loaded from one checkpoint. Collective: every rank
    must call it. Returns the number of tensors broadcast (0 on one rank). FP8 tensors travel as bytes.
    """
    if not tp.enabled:
        return 0
    sharded: set[int] = set()
    for mod in model.modules():
        if getattr(mod, "shard", None) is not None:
            sharded.update(id(p) for p in mod.parameters(recurse=False))
        if getattr(mod, "tp", None) is not None and hasattr(mod, "expert_start"):  # expert-parallel MoE
            sharded.update(id(p) for p in (mod.w13, mod.w2, mod.w13_scale_inv, mod.w2_scale_inv) if p is not None)
    seen: set[tuple] = set()
    n = 0
    for p in model.parameters():
        key = (p.data_ptr(), tuple(p.shape), p.dtype)
        if id(p) in sharded or key in seen:
            continue
        seen.add(key)
        t = p.data if p.is_contiguous() else p.data.contiguous()
        wire = t.view(torch.uint8) if t.dtype.itemsize == 1 else t
        dist.broadcast(wire, src)
        if t is not p.data:
            p.data.copy_(t)
        n += 1
    return n


# NVLink SHARP / multicast off (NCCL, torch symmetric memory, NVSHMEM): on the project's multi-GPU machines it
# can take the host's GPUs out of service. Tests and benchmarks put these into every process they start.
NO_MULTICAST_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


class TPLaunchError(ValueError):
    """The environment asks for a process group (WORLD_SIZE > 1) that cannot be joined: a torchrun variable
    is missing or malformed, or the other ranks did not arrive in time. The message names the variable(s)."""


def _env_int(name: str, low: int, high: int | None = None) -> int:
    raw = os.environ.get(name)
    try:
        v = int(raw)
    except (TypeError, ValueError):
        v = None
    if v is None or v < low or (high is not None and v > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise TPLaunchError(f"environment variable {name}={raw!r} must be {bound}")
    return v


def env_world_size() -> int:
    """WORLD_SIZE from the environment (torchrun's process count); 1 when unset. Raises TPLaunchError if malformed."""
    return _env_int("WORLD_SIZE", 1) if os.environ.get("WORLD_SIZE", "") != "" else 1


def init_from_env(device_type: str, timeout_s: float = 600.0, rendezvous_timeout_s: float = 120.0) -> TP:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
    WORLD_SIZE unset or 1 → TP() (one process, no group).

    device_type "cuda": NCCL, this process on GPU LOCAL_RANK (``torch.cuda.set_device``; the communicator is
    created now, bound to that GPU); "cpu": gloo. Under torchrun (its agent serves the TCP store) this is torch's
    env:// rendezvous; with the variables set by hand, rank 0 hosts the store at MASTER_ADDR:MASTER_PORT and
    rendezvous_timeout_s bounds the wait for the other ranks. timeout_s bounds every collective (a peer that died
    makes the others fail after it instead of hanging).
    Raises ValueError for another device_type; TPLaunchError (a ValueError) naming the variable when WORLD_SIZE > 1
    but a variable torchrun sets is missing or malformed (WORLD_SIZE exported by hand, without torchrun), and
    when the other ranks have not arrived within rendezvous_timeout_s.
    """
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device_type={device_type!r} must be 'cuda' or 'cpu'")
    world = env_world_size()
    if world == 1:
        return TP()
    if not dist.is_initialized():
        needed = ("RANK", "MASTER_ADDR", "MASTER_PORT") + (("LOCAL_RANK",) if device_type == "cuda" else ())
        missing = [v for v in needed if not os.environ.get(v)]
        if missing:
            raise TPLaunchError(
                f"WORLD_SIZE={world} is set in the environment but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not: a {world}-process group needs every rank started with "
                "RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, as torchrun sets them (torchrun --nproc-per-node "
                f"{world} ...; the CLI's --tp {world} starts torchrun itself); for one process unset WORLD_SIZE")
        rank = _env_int("RANK", 0, world - 1)
        port = _env_int("MASTER_PORT", 0, 65535)
        addr = os.environ["MASTER_ADDR"]
        timeout = datetime.timedelta(seconds=timeout_s)
        if _torchrun_agent_store():
            # under torchrun its agent serves the store and has gathered the ranks: torch's own env:// rendezvous
            init = dict(init_method="env://")
        else:  # variables set by hand: the store env:// would build, with a bounded wait for the other ranks
            deadline = time.monotonic() + rendezvous_timeout_s
            try:
                if rank == 0:
                    # rank 0's store client connects to MASTER_ADDR too: an unknown host made torch retry after a
                    # random delay (233 s for a 120 s bound, C++ frames, tester 2 of session 17); refuse at once
                    import socket

                    socket.getaddrinfo(addr, port)
                else:
                    # Reach rank 0's store from Python first: torch's client retries a failed connect or handshake
                    # after a random delay of up to the timeout (206-239 s for a 120 s bound with no listener, 42 s
                    # for 5 s with an HTTP server on the port, measured) and logs C++ frames.
                    _wait_for_listener(addr, port, deadline)
                left = max(deadline - time.monotonic(), 1.0)
                store = dist.TCPStore(addr, port, world, is_master=rank == 0,
                                      timeout=datetime.timedelta(seconds=left), multi_tenant=True)
            except (RuntimeError, OSError) as e:  # DistStoreError: timeout, port in use; OSError: no listener/host
                if rank == 0 and ("EADDRINUSE" in str(e) or "address already in use" in str(e).lower()):
                    raise TPLaunchError(
                        f"rank 0 of WORLD_SIZE={world} cannot host the store at MASTER_ADDR={addr} MASTER_PORT={port}: "
                        "another program listens on that port; choose a free MASTER_PORT for every rank") from None
                raise TPLaunchError(
                    f"rank {rank} of WORLD_SIZE={world} could not meet the other ranks at MASTER_ADDR={addr} "
                    f"MASTER_PORT={port} within {rendezvous_timeout_s:.0f} s ({str(e).splitlines()[0][:200]}): "
                    f"start every rank (torchrun --nproc-per-node {world} ..., or the CLI's --tp {world} without "
                    "WORLD_SIZE in the environment)") from None
            store.set_timeout(timeout)  # every rank has arrived: later store waits get the collectives' bound
            init = dict(store=store, rank=rank, world_size=world)
        if device_type == "cuda":
            local = _env_int("LOCAL_RANK", 0, max(torch.cuda.device_count() - 1, 0))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local), **init)
        else:
            dist.init_process_group("gloo", timeout=timeout, **init)
        # Tear the group down before interpreter exit: one left to the C++ destructors aborted a finished
        # CPU --tp 2 run once in CI ("terminate called without an active exception", exit 1).
        atexit.register(_destroy_group)
    return TP(dist.get_rank(), dist.get_world_size())


def _wait_for_listener(addr: str, port: int, deadline: float) -> None:
    """Return once a torch.distributed TCP store answers at addr:port (:func:`_store_answers`); OSError naming the
    last failure (refused, unknown host, another service on the port) once time.monotonic() passes ``deadline``.
    Retries silently: every 0.5 s while nothing listens, every 2 s while another service answers.

    A bare TCP connect was taken for the store before (session 18): with an unrelated service on MASTER_PORT (an HTTP
    server) torch's client then failed its handshake and retried after a random delay (42 s for a 5 s bound, with
    C++ frames)."""
    while True:
        try:
            if _store_answers(addr, port, max(min(deadline - time.monotonic(), 2.0), 0.1)):
                return
            why, pause = (f"the service listening at {addr}:{port} is not a torch.distributed store (another program "
                          "on MASTER_PORT?)"), 2.0
        except OSError as e:
            why, pause = f"no listener at {addr}:{port}: {e}", 0.5
        left = deadline - time.monotonic()
        if left <= 0:
            raise OSError(why)
        time.sleep(min(pause, left))


def _store_answers(addr: str, port: int, timeout: float) -> bool:
    """Whether the listener at addr:port answers the handshake torch's TCPStore client opens with: VALIDATE with
    c10d's magic number, then PING with a nonce the store echoes (c10d TCPStoreBackend's QueryType 0 and 13, uint32
    little-endian). False for another service (it closes, answers something else, or stays silent for ``timeout``
    s); OSError when nothing listens. Only a probe: it adds no key and no worker to the store."""
    import secrets
    import socket
    import struct

    nonce = secrets.randbits(32)
    with socket.create_connection((addr, port), timeout=timeout) as conn:
        conn.sendall(struct.pack("<BIBI", 0, 0x3C85F7CE, 13, nonce))
        got = b""
        try:
            while len(got) < 4:
                chunk = conn.recv(4 - len(got))
                if not chunk:
                    break
                got += chunk
        except OSError:  # reset, or silent past the timeout
            return False
    return got == struct.pack("<I", nonce)


def _torchrun_agent_store() -> bool:
    """torchrun's agent already serves the TCP store at MASTER_ADDR:MASTER_PORT; every rank is its client."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def spawn(fn, args: tuple, nprocs: int, timeout_s: float) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` fresh processes (``torch.multiprocessing``, spawn) with NVLink
    multicast off (:data:`NO_MULTICAST_ENV`) and NCCL async error handling on; wait for all of them.

    Raises TimeoutError (after killing the survivors) when they have not finished in ``timeout_s`` — a hung
    collective ends the run instead of hanging it — and ``torch.multiprocessing.ProcessRaisedException`` /
    ``ProcessExitedException`` when one fails. For tests and benchmarks; ``torchrun`` is the launcher for use.
    """
    import time

    import torch.multiprocessing as mp

    os.environ.update(NO_MULTICAST_ENV)  # the children inherit the environment at start
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            raise TimeoutError(f"the {nprocs} spawned processes did not finish in {timeout_s:.0f} s")


# CUDA-graph holders (objects with .close()) whose graphs captured collectives: NCCL's communicator destroy waits
# until every graph that captured one of its kernels is destroyed, so shutdown() closes them first.
_GRAPH_OWNERS: "weakref.WeakSet" = weakref.WeakSet()


def close_before_shutdown(owner) -> None:
    """Register ``owner`` (anything with ``close()`` that drops its CUDA graphs) to be closed by :func:`shutdown`."""
    _GRAPH_OWNERS.add(owner)


def shutdown() -> None:
    """Close the registered CUDA-graph holders, then destroy the process group (no-op without one).

    Order matters on NCCL: a communicator whose collectives sit in a live CUDA graph cannot be destroyed
    (``ncclCommDestroy`` waits for those graphs; pytorch#115388). Registered by :func:`init_from_env` at exit.
    """
    for owner in list(_GRAPH_OWNERS):
        owner.close()
    gc.collect()
    if dist.is_initialized():
        if dist.get_backend() == "nccl":
            torch.cuda.synchronize()
        dist.destroy_process_group()


def _destroy_group() -> None:
    shutdown()
