"""Tensor + expert parallelism on CPU: 2 processes over gloo give the single-process results.

Tolerance: splitting heads/columns/experts across ranks only reorders fp32 sums (all-reduce), so
logits agree to ~1e-6 relative; we assert 1e-5 and identical greedy tokens. This holds for the reference backend
only. On the triton backend (FP8 activations; the CPU interpreter, or the GPU tests below) TP2 and TP1 differ by
2-12 %, as much as either differs from the fp32 truth. Greedy tokens then flip at near-ties: on CPU, a 201-token
prompt diverged at a top-2 gap of 0.19 in fp32 and 0.31 in TP1 (tritonseek/parallel.py's docstring has the
figures). So no CPU triton-backend TP test asserts token equality; a 201-token interpreter run also takes ~3.5 min
per configuration.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tritonseek import LLM, SamplingParams
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.parallel import NO_MULTICAST_ENV, TP, spawn

PROMPTS = ["def fibonacci(n):", "import os\nimport sys\n", "class A:\n    def __init__(self):"]


def _run(model_dir: str):
    llm = LLM(model_dir, device="cpu", backend="reference", tp=TP(dist.get_rank(), dist.get_world_size())
              if dist.is_initialized() else None)
    outs = llm.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    spec = llm.generate(PROMPTS, SamplingParams(max_new_tokens=12), mtp=2)
    # unseeded sampling: each rank's own RNG differs (as in separate processes); rank 0's seeds must be used
    torch.manual_seed(1000 + (dist.get_rank() if dist.is_initialized() else 0))
    sampled = llm.generate(PROMPTS[:2], SamplingParams(max_new_tokens=12, temperature=1.0))
    return (llm.score(llm.encode(PROMPTS[0])), [o.token_ids for o in outs], [o.token_ids for o in spec],
            [o.token_ids for o in sampled])


def _worker(rank: int, world: int, init_file: str, model_dirs: list[str], out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = []
        for d in model_dirs:
            logits, toks, spec, sampled = _run(d)
            res.append({"logits": logits, "tokens": toks, "spec": spec, "sampled": sampled})
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _parallel(model_dirs: list[Path], tmp_path: Path, world: int = 2) -> list[list[dict]]:
    """[model][rank] results of ``world`` gloo processes (one spawn for every model: each spawn costs seconds)."""
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), [str(d) for d in model_dirs], str(tmp_path)), nprocs=world,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    return [[ranks[r][i] for r in range(world)] for i in range(len(model_dirs))]


def _skewed_checkpoint(tmp_path: Path) -> Path:
    """The default model with routing biased so every token picks experts 0 and 1 (both on rank 0)."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "skewed"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    sd = load_file(str(d / "model.safetensors"))
    for k in sd:
        if k.endswith("e_score_correction_bias"):
            sd[k] = torch.zeros_like(sd[k])
            sd[k][:2] = 10.0
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def test_tp2_matches_single_process(tmp_path):
    """The default checkpoint and a skewed one (every token routed to rank 0's experts), in one spawn."""
    dirs = [DEFAULT_MODEL_DIR, _skewed_checkpoint(tmp_path)]
    for which, model_dir, ranks in zip(("default", "skewed"), dirs, _parallel(dirs, tmp_path)):
        single_logits, single_tokens, single_spec, _ = _run(str(model_dir))
        assert ranks[1]["sampled"] == ranks[0]["sampled"]  # unseeded temperature 1: the same draws on every rank
        for r in ranks:
            err = ((r["logits"] - single_logits).norm() / single_logits.norm()).item()
            print(f"{which}: tp=2 logits rel err {err:.2e}")
            assert err < 1e-5
            assert r["tokens"] == single_tokens
            assert r["spec"] == single_spec == single_tokens


def test_tp_rejects_bad_ranks():
    """Fresh-user pass (session 16): TP(5, 2) / TP(0, 0) failed deep inside loading; LLM(tp=2) with AttributeError."""
    for args, err in (((5, 2), ValueError), ((-1, 2), ValueError), ((0, 0), ValueError), ((True, 2), TypeError),
                      ((0, 2.0), TypeError)):
        with pytest.raises(err, match="TP (rank|world_size)"):
            TP(*args)
    with pytest.raises(TypeError, match="tp must be a tritonseek.parallel.TP"):
        LLM(device="cpu", backend="reference", tp=2)


def test_init_from_env_without_torchrun_raises_naming_the_variable(monkeypatch):
    """WORLD_SIZE=2 alone raised torch's env:// ValueError (MASTER_ADDR); with every variable but no peer,
    rank 0 waited timeout_s (600 s). Now: TPLaunchError naming the variables; the rendezvous is bounded."""
    import socket
    import time

    from tritonseek.parallel import TPLaunchError, init_from_env

    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env("cpu") == TP()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TPLaunchError, match="WORLD_SIZE=2 .* RANK, MASTER_ADDR, MASTER_PORT are not"):
        init_from_env("cpu")
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(TPLaunchError, match="RANK='2' must be an integer in"):
        init_from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    t0 = time.monotonic()
    with pytest.raises(TPLaunchError, match="could not meet the other ranks"):
        init_from_env("cpu", rendezvous_timeout_s=1)  # rank 1 never comes
    assert time.monotonic() - t0 < 30 and not dist.is_initialized()
    # Session 17: rank 1 without rank 0 took 206-239 s for a stated 120 s (torch's client retries once after a
    # random delay of up to the timeout) and printed C++ frames; the bound now holds (2 s + a poll step here).
    monkeypatch.setenv("RANK", "1")
    t0 = time.monotonic()
    with pytest.raises(TPLaunchError, match="rank 1 of WORLD_SIZE=2 could not meet the other ranks .* within 2 s"):
        init_from_env("cpu", rendezvous_timeout_s=2)
    assert time.monotonic() - t0 < 3.0 and not dist.is_initialized()
    # Session 17, tester 2: rank 0 with an unknown MASTER_ADDR took 233 s for a stated 120 s (torch's store client
    # retried after a random delay); the address is now resolved first and refused at once.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "no-such-host.invalid")
    t0 = time.monotonic()
    with pytest.raises(TPLaunchError, match="MASTER_ADDR=no-such-host.invalid"):
        init_from_env("cpu", rendezvous_timeout_s=60)
    assert time.monotonic() - t0 < 10.0 and not dist.is_initialized()


def test_rank_1_facing_another_service_ends_at_the_bound(monkeypatch):
    """Tester finding (session 18): a rank > 0 started by hand with MASTER_PORT where an unrelated service listens
    (python -m http.server) took the bare TCP connect for rank 0's store; torch's client then failed its handshake
    and retried after a random delay (42 s for a 5 s bound, C++ frames). Now the store's own handshake is checked
    first: one TPLaunchError at the bound naming the other service. A real TCPStore passes the same check."""
    import datetime
    import socket
    import threading
    import time

    from tritonseek.parallel import TPLaunchError, _store_answers, init_from_env

    srv = socket.socket()  # a service that is not a store: reads the request, answers an HTTP-like line, closes
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(64)
                    conn.sendall(b"HTTP/1.0 400 Bad request\r\n\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        for var in ("TORCHELASTIC_USE_AGENT_STORE", "LOCAL_RANK"):
            monkeypatch.delenv(var, raising=False)
        for var, v in (("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
            monkeypatch.setenv(var, v)
        assert not _store_answers("127.0.0.1", port, 1.0)
        t0 = time.monotonic()
        with pytest.raises(TPLaunchError, match="within 2 s .*is not a torch.distributed store"):
            init_from_env("cpu", rendezvous_timeout_s=2)
        assert 1.5 < time.monotonic() - t0 < 3.0 and not dist.is_initialized()
        monkeypatch.setenv("RANK", "0")  # rank 0 on that port: told at once that another program holds it
        t0 = time.monotonic()
        with pytest.raises(TPLaunchError, match=f"MASTER_PORT={port}: another program listens on that port"):
            init_from_env("cpu", rendezvous_timeout_s=30)
        assert time.monotonic() - t0 < 5.0 and not dist.is_initialized()
    finally:
        stop.set()
        t.join()
        srv.close()
    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=10))
    assert _store_answers("127.0.0.1", store.port, 2.0)  # the handshake of this torch's TCPStore
    store.set("k", b"v")
    assert store.get("k") == b"v" and store.num_keys() == 1  # the probe added no key


def test_tp_shards_are_rank_slices(tmp_path):
    """Each rank holds its slice only: heads, vocabulary rows, experts."""
    full = LLM(device="cpu", backend="reference").model
    part = LLM(device="cpu", backend="reference", tp=TP(1, 2)).model  # no collective needed to load
    cfg = full.cfg
    assert part.model.layers[0].self_attn.num_heads == cfg.num_attention_heads // 2
    assert part.model.embed_tokens.weight.shape[0] == cfg.vocab_size // 2
    torch.testing.assert_close(part.model.embed_tokens.weight, full.model.embed_tokens.weight[cfg.vocab_size // 2:])
    moe = part.model.layers[1].mlp
    assert moe.w13.shape[0] == cfg.n_routed_experts // 2 and moe.expert_start == cfg.n_routed_experts // 2
    torch.testing.assert_close(moe.w2.float(), full.model.layers[1].mlp.w2[cfg.n_routed_experts // 2:].float())
    # q_b_proj: 4 heads × 96 rows = 384 → 192 per rank, not on the 128-row FP8 grid: the enclosing FP8 blocks
    # (rows 128–383 with their two scale rows) are held, and the rank keeps product columns 64–255
    qb, qb_full = part.model.layers[0].self_attn.q_b_proj, full.model.layers[0].self_attn.q_b_proj
    assert qb.fp8 and qb.shard == (0, 128, 384) and qb.out_slice == (64, 256)
    torch.testing.assert_close(qb.weight.float(), qb_full.weight[128:].float())
    torch.testing.assert_close(qb.weight_scale_inv, qb_full.weight_scale_inv[1:])
    torch.testing.assert_close(qb.dense_weight(), qb_full.dense_weight()[192:])
    x = torch.randn(3, cfg.q_lora_rank)
    torch.testing.assert_close(qb(x), qb_full(x)[:, 192:])
    # shared expert: I = 128 → 64 per rank is off the grid: held whole, computed by rank 0 only
    assert moe.shared_experts.gate_proj.weight.shape[0] == cfg.moe_intermediate_size and not moe.shared_on_this_rank
    # kv_b_proj: 4 × 128 = 512 → 256 per rank, on the grid: stays FP8 with its scale rows
    kvb = part.model.layers[0].self_attn.kv_b_proj
    assert kvb.fp8 and kvb.weight_scale_inv.shape[0] == 2


def _cli(*args):
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", **NO_MULTICAST_ENV}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "tritonseek.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_tp2_prints_once_and_matches_tp1():
    from typer.testing import CliRunner

    from tritonseek.cli import app

    one = CliRunner().invoke(app, ["generate", "-p", "def fibonacci(n):", "-n", "12"])  # tp 1 in this process
    two = _cli("generate", "-p", "def fibonacci(n):", "-n", "12", "--tp", "2")
    assert one.exit_code == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout == one.stdout  # rank 1 prints nothing; the text is the same
    assert two.stderr.count("prompt tokens") == 1


def test_cli_tp2_load_failure_is_one_clear_error():
    r = _cli("generate", "-p", "x", "--tp", "2", "--model", "/nonexistent/model")
    assert r.returncode == 2  # a user error, as without --tp (torchrun itself reports 1)
    assert "neither a folder nor a Hugging Face id" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- CUDA, NCCL
# Two processes with NCCL, one GPU each, triton backend, against one process on one GPU (the parent).
# Tolerances: tp=2 differs from tp=1 where partial sums meet: o_proj and each FFN all-reduce two bf16 partials
# (each rounded to bf16 before the sum; one process rounds once, after an fp32 accumulation). That alone is
# bf16-sized, and the first attention block shows it (H200 W2, 2654f5d: 2.8e-3 relative; asserted < FIRST_TOL).
# Downstream it is amplified, not a bug: a changed bf16 activation moves elements across e4m3 rounding
# boundaries in the next FP8 activation quant (one e4m3 step = 6-12 %), and in a MoE layer it can flip a
# near-equal top-k choice for a token (W2: dense MLP 2.1e-2, layer-1 attention 4.1e-2, MoE 0.07-0.12, logits
# 2.4e-2 to 4.2e-2: the size of the whole FP8 activation rounding, 4.0-4.7 % triton vs reference in
# tests/model/test_backends_gpu.py). So: logits < LOGIT_TOL, greedy argmax equal wherever tp=1's top-2 logit
# margin exceeds MARGIN (1.0, test_backends_gpu's criterion; W2 flips came at margins 0.44 and 0.34), and
# generated tokens equal up to a near-tie (margin < MARGIN at the first differing position). A missing or
# extra all-reduce, a wrong shard or a double-counted shared expert moves the first block by O(1).
TWO_GPUS = torch.cuda.is_available() and torch.cuda.device_count() >= 2
FIRST_TOL = 1e-2
LOGIT_TOL = 8e-2
MARGIN = 1.0
GPU_NEW_TOKENS = 24


def _module_outputs(llm: LLM, seq: list[int]) -> dict[str, torch.Tensor]:
    """Each decoder layer's attention and FFN output (after its all-reduce) in a teacher-forced pass over seq:
    where tp=2 and tp=1 part, for the diagnostics."""
    outs, hooks = {}, []
    for i, layer in enumerate(llm.model.model.layers):
        for name in ("self_attn", "mlp"):
            def keep(mod, args, out, key=f"layer{i}.{name}"):
                outs[key] = out.float().cpu()
            hooks.append(getattr(layer, name).register_forward_hook(keep))
    try:
        llm.score(seq)
    finally:
        for h in hooks:
            h.remove()
    return outs


def _cuda_results(llm: LLM, seqs: list[list[int]]) -> dict:
    """Greedy tokens with CUDA graphs, eagerly and with MTP (K=2); teacher-forced logits of ``seqs``."""
    params = SamplingParams(max_new_tokens=GPU_NEW_TOKENS)
    graphs = [o.token_ids for o in llm.generate(PROMPTS, params)]
    replays = llm._graphs.replays if llm._graphs is not None else 0
    spec = [o.token_ids for o in llm.generate(PROMPTS, params, mtp=2)]
    llm.enforce_eager = True
    eager = [o.token_ids for o in llm.generate(PROMPTS, params)]
    llm.enforce_eager = False
    scores = [llm.score(s).cpu() for s in seqs]
    return {"graphs": graphs, "eager": eager, "spec": spec, "scores": scores, "replays": replays,
            "modules": _module_outputs(llm, seqs[0])}


def _cuda_worker(rank: int, world: int, init_file: str, model_dirs: list[str], seqs: list, out_dir: str):
    import datetime

    from tritonseek.parallel import shutdown

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120), device_id=torch.device("cuda", rank))
    try:
        res = []
        for d, s in zip(model_dirs, seqs):
            llm = LLM(d, device="cuda", backend="triton", tp=TP(rank, world))
            res.append(_cuda_results(llm, s))
            del llm
        torch.save(res, Path(out_dir) / f"cuda_rank{rank}.pt")
    finally:
        shutdown()  # drops the graphs (they hold NCCL kernels) before destroying the group


def _long_text() -> str:
    import inspect
    import json.decoder

    return inspect.getsource(json.decoder)


@pytest.fixture(scope="module")
def cuda_tp_runs(tmp_path_factory):
    """tp=1 in this process on cuda:0, then tp=2 over NCCL on cuda:0/1, for the default and the skewed model."""
    tmp = tmp_path_factory.mktemp("tp_cuda")
    dirs = [str(DEFAULT_MODEL_DIR), str(_skewed_checkpoint(tmp))]
    single, seqs = [], []
    for d in dirs:
        llm = LLM(d, device="cuda:0", backend="triton")
        toks = [o.token_ids for o in llm.generate(PROMPTS, SamplingParams(max_new_tokens=GPU_NEW_TOKENS))]
        # + a 200-token sequence: its prefill (T > 128) takes the MoE's contiguous layout (foreign slots −1)
        s = [llm.encode(p) + t for p, t in zip(PROMPTS, toks)] + [llm.encode(_long_text())[:200]]
        single.append({"graphs": toks, "scores": [llm.score(x).cpu() for x in s], "seqs": s,
                       "used_graphs": llm.uses_cuda_graphs, "modules": _module_outputs(llm, s[0])})
        seqs.append(s)
        del llm
    spawn(_cuda_worker, (2, str(tmp / "init"), dirs, seqs, str(tmp)), 2, 240)
    ranks = [torch.load(tmp / f"cuda_rank{r}.pt") for r in range(2)]
    return dirs, single, ranks


def _check_against_tp1(one: dict, two: dict, key: str, which: str) -> None:
    n_prompt = [len(s) - len(t) for s, t in zip(one["seqs"], one["graphs"])]
    for i, (a, b) in enumerate(zip(one["graphs"], two[key])):
        if a == b:
            continue
        j = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))  # or a prefix
        top2 = one["scores"][i][n_prompt[i] - 1 + j].float().topk(2).values
        margin = float(top2[0] - top2[1])
        print(f"{which} {key} prompt {i}: tokens differ at {j} (tp=1 margin {margin:.3f})")
        assert margin < MARGIN, f"{which} {key} prompt {i}: token {j} differs at a clear margin {margin:.3f}"


@pytest.mark.gpu
@pytest.mark.skipif(not TWO_GPUS, reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize("which", [0, 1], ids=["default", "skewed"])
def test_cuda_tp2_matches_tp1(cuda_tp_runs, which):
    dirs, single, ranks = cuda_tp_runs
    one = single[which]
    name = ["default", "skewed"][which]
    assert one["used_graphs"]
    for r, res in enumerate(ranks):
        two = res[which]
        for k, a in one["modules"].items():  # diagnostics first: where the two runs part
            b = two["modules"][k]
            print(f"{name} rank {r} {k}: rel err {((b - a).norm() / a.norm()).item():.2e}")
        a, b = one["modules"]["layer0.self_attn"], two["modules"]["layer0.self_attn"]
        assert ((b - a).norm() / a.norm()).item() < FIRST_TOL  # the first block: bf16 rounding of the partials
        assert two["replays"] > 0  # the tp=2 decode ran through CUDA graphs
        assert two["graphs"] == ranks[0][which]["graphs"]  # every rank emits the same tokens
        for key in ("graphs", "eager", "spec"):
            _check_against_tp1(one, two, key, name)
        for i, (a, b) in enumerate(zip(one["scores"], two["scores"])):
            a, b = a.float(), b.float()
            err = ((b - a).norm() / a.norm()).item()
            top2 = a.topk(2, dim=-1).values
            clear = (top2[:, 0] - top2[:, 1]) > MARGIN
            agree = (a.argmax(-1) == b.argmax(-1))[clear].float().mean().item()
            print(f"{name} rank {r} prompt {i}: logits rel err {err:.2e}, argmax agreement {agree:.3f} "
                  f"on {int(clear.sum())} clear positions")
            assert err < LOGIT_TOL and agree == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not TWO_GPUS, reason="needs 2 CUDA GPUs")
def test_cli_cuda_tp2_prints_once_and_matches_tp1():
    # tp=2 may flip a greedy near-tie (see LOGIT_TOL above): the prompt is the first candidate whose 12 greedy
    # tokens all win by more than MARGIN on one GPU, so equal text is what a correct tp=2 must print
    llm = LLM(device="cuda:0", backend="triton")
    prompt, best = None, -1.0
    for cand in ["def fibonacci(n):", "import os\nimport sys\n", "class A:\n    def __init__(self):", "for i in range("]:
        toks = llm.generate([cand], SamplingParams(max_new_tokens=12))[0].token_ids
        ids = llm.encode(cand)
        top2 = llm.score(ids + toks)[len(ids) - 1 : -1].float().topk(2, dim=-1).values
        m = float((top2[:, 0] - top2[:, 1]).min())
        print(f"CLI prompt candidate {cand!r}: smallest greedy margin {m:.3f}")
        if m > best:
            prompt, best = cand, m
        if m > MARGIN:
            break
    del llm
    one = _cli("generate", "-p", prompt, "-n", "12", "--device", "cuda")
    two = _cli("generate", "-p", prompt, "-n", "12", "--device", "cuda", "--tp", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout == one.stdout
    assert two.stderr.count("prompt tokens") == 1
