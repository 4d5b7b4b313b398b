"""Load a DeepSeek-architecture HF checkpoint folder (safetensors, single file or sharded).

The model is built directly on the target device with uninitialised storage and filled tensor by
tensor from memory-mapped safetensors files, so no weight is allocated twice. FP8 checkpoints
(e4m3 ``weight`` + fp32 ``weight_scale_inv`` per 128×128 block, ceil-sized for ragged shapes) are
kept in FP8; bf16/fp32 checkpoints can be quantized to the same format at load. A scale may sit in
another shard than its weight: every key is located through the index (or the shards' headers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors import SafetensorError

from tritonseek.model.config import ModelConfig
from tritonseek.model.layers import FP8_BLOCK
from tritonseek.model.model import DeepseekForCausalLM
from tritonseek.model.moe import MoE
from tritonseek.model.ops import Ops
from tritonseek.parallel import TP

FP8_DTYPES = (torch.float8_e4m3fn,)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the key and/or the file."""


@dataclass
class _Target:
    param: torch.Tensor
    index: tuple | None = None  # where inside ``param`` the checkpoint tensor goes
    optional_from: str | None = None  # copy this (main-model) key when the tensor is absent
    src: tuple | None = None  # (dim, start, end): the slice of the checkpoint tensor this rank holds


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def checkpoint_targets(model: DeepseekForCausalLM) -> dict[str, _Target]:
    """Map every HF checkpoint key the model needs to the parameter (slice) it fills."""
    cfg = model.cfg
    targets: dict[str, _Target] = {}
    moe_prefixes: dict[str, MoE] = {}
    modules = dict(model.named_modules())
    for mod_name, mod in modules.items():
        if isinstance(mod, MoE):
            moe_prefixes[mod_name] = mod
    for name, p in model.named_parameters():
        key = _hf_key(name, cfg)
        mod_name, _, leaf = name.rpartition(".")
        if mod_name in moe_prefixes and leaf in ("w13", "w2", "w13_scale_inv", "w2_scale_inv"):
            moe = moe_prefixes[mod_name]
            prefix = _hf_key(mod_name, cfg) + ".experts"
            I = cfg.moe_intermediate_size
            Ib = _cdiv(I, FP8_BLOCK)
            for e in range(moe.expert_start, moe.expert_end):  # this rank's experts only
                j = e - moe.expert_start
                if leaf == "w13":
                    targets[f"{prefix}.{e}.gate_proj.weight"] = _Target(p, (j, slice(0, I)))
                    targets[f"{prefix}.{e}.up_proj.weight"] = _Target(p, (j, slice(I, 2 * I)))
                elif leaf == "w2":
                    targets[f"{prefix}.{e}.down_proj.weight"] = _Target(p, (j,))
                elif leaf == "w13_scale_inv":
                    targets[f"{prefix}.{e}.gate_proj.weight_scale_inv"] = _Target(p, (j, slice(0, Ib)))
                    targets[f"{prefix}.{e}.up_proj.weight_scale_inv"] = _Target(p, (j, slice(Ib, 2 * Ib)))
                else:
                    targets[f"{prefix}.{e}.down_proj.weight_scale_inv"] = _Target(p, (j,))
            continue
        shard = getattr(modules[mod_name], "shard", None)
        if shard is not None and leaf == "weight_scale_inv":
            dim, a, b = shard
            shard = (dim, a // FP8_BLOCK, _cdiv(b, FP8_BLOCK))
        targets[key] = _Target(p, src=shard)
    # The MTP layer's embedding/head are copies of the main model's; some checkpoints omit them.
    L = cfg.num_hidden_layers
    for i in range(len(model.mtp)):
        for sub, main in (("embed_tokens.weight", "model.embed_tokens.weight"), ("shared_head.head.weight", "lm_head.weight")):
            k = f"model.layers.{L + i}.{sub}"
            if k in targets:
                targets[k].optional_from = main
    if cfg.tie_word_embeddings and "lm_head.weight" in targets:
        targets["lm_head.weight"].optional_from = "model.embed_tokens.weight"
    return targets


def _hf_key(name: str, cfg: ModelConfig) -> str:
    if name.startswith("mtp."):
        _, idx, rest = name.split(".", 2)
        rest = rest[len("block."):] if rest.startswith("block.") else rest
        return f"model.layers.{cfg.num_hidden_layers + int(idx)}.{rest}"
    return name


def _key_files(folder: Path) -> dict[str, Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            raw = json.loads(index.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e})") from None
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else raw
        # a list or null here was a bare AttributeError / TypeError (a traceback from the CLI; h2tester s26)
        if not isinstance(weight_map, dict):
            what = "weight_map" if isinstance(raw, dict) else "the file"
            raise CheckpointError(f"{index} is not a valid safetensors index: it needs a \"weight_map\" object "
                                  f"(tensor name → shard file), {what} is {json.dumps(weight_map)[:40]}")
        out = {}
        for k, f in weight_map.items():
            if not isinstance(f, str):
                raise CheckpointError(f"{index} maps {k!r} to {f!r}, not a file name")
            path = folder / f
            if not path.is_file():
                why = "a folder, not a file" if path.is_dir() else "which does not exist"
                raise CheckpointError(f"{index} maps {k!r} to {f}, {why}")
            out[k] = path
        return out
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {folder}")
    out = {}
    for f in files:
        for k in _open(f).keys():
            # without an index a key in two files (a stale extra shard) silently took the later file's copy
            # (tester21 #15c): which one is meant is not ours to guess
            if k in out:
                raise CheckpointError(f"tensor {k!r} is in both {out[k].name} and {f.name} (and there is no "
                                      "model.safetensors.index.json to say which one counts): remove the stale file")
            out[k] = f
    return out


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        # what is wrong with the path itself comes first: a dangling symlink (an interrupted HF download's snapshot)
        # or a folder read as "truncated or corrupted" (h2tester s25 F7)
        if path.is_symlink() and not path.exists():
            why = f"it is a symlink to {path.readlink()}, which does not exist (an incomplete download?)"
        elif path.is_dir():
            why = "it is a folder, not a file"
        else:
            why = f"the file is truncated or corrupted ({e})"
        raise CheckpointError(f"cannot read {path}: {why}") from None


def load_model(
    path: str | Path,
    *,
    ops: Ops,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    quantize_fp8: bool = False,
    with_mtp: bool = True,
    progress: bool = False,
    tp: TP | None = None,
) -> DeepseekForCausalLM:
    """Build the model from an HF checkpoint folder.

    Args:
        path: folder with ``config.json`` and ``*.safetensors`` (+ ``model.safetensors.index.json`` when sharded).
        ops: kernel backend.
        device: where the weights live.
        dtype: activation/dense dtype; default bf16 on CUDA, fp32 on CPU.
        quantize_fp8: quantize a bf16/fp32 checkpoint's linears to 128×128 block FP8 at load.
        with_mtp: also load the MTP layer (``model.layers.{num_hidden_layers}.*``) when the config has one.
        progress: show a rich progress bar over the shards.
        tp: tensor/expert-parallel rank (:mod:`tritonseek.parallel`); each rank reads only its slices
            (heads, MLP columns, vocabulary rows, its experts) from the memory-mapped files.
    Returns:
        :class:`DeepseekForCausalLM` in eval mode.
    Raises:
        ConfigError: bad config.json. CheckpointError: missing/unexpected/mis-shaped tensor (names the
        key and file), truncated or corrupted file, a malformed model.safetensors.index.json or one that maps a key
        to a shard without it, FP8 weight without its scale, a non-FP8 weight stored next
        to an FP8 scale, a NaN/inf weight, a negative or all-zero weight_scale_inv, a key in two files without
        an index, a stored lm_head.weight that differs from the embedding under tie_word_embeddings: true (one
        equal to it loads: see ``_check_tied_head``).
    """
    folder = Path(path)
    cfg = ModelConfig.from_file(folder)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    fp8 = cfg.quantization_config is not None or quantize_fp8
    key_files = _key_files(folder)
    # HF's save_pretrained keeps num_nextn_predict_layers in config.json but writes no MTP weights. A config that
    # says 0 skips the MTP weights a checkpoint holds, as with_mtp=False does (they were "unexpected tensors").
    # Skipped only when layer num_hidden_layers IS an MTP layer (its eh_proj): a plain decoder layer there means
    # num_hidden_layers is too small, and dropping it silently would load a truncated model.
    L = cfg.num_hidden_layers
    mtp_in_checkpoint = f"model.layers.{L}.eh_proj.weight" in key_files
    with_mtp = (with_mtp and cfg.num_nextn_predict_layers > 0
                and any(k.startswith(f"model.layers.{L}.") for k in key_files))
    with torch.device(device):
        model = DeepseekForCausalLM(cfg, ops, dtype=dtype, fp8=fp8, with_mtp=with_mtp, tp=tp)

    targets = checkpoint_targets(model)
    parallel = tp is not None and tp.enabled
    unexpected = [
        k for k in key_files
        if k not in targets and not (not with_mtp and mtp_in_checkpoint and k.startswith(f"model.layers.{L}."))
        and not (parallel and ".mlp.experts." in k)  # another rank's experts
        and not k.endswith("rotary_emb.inv_freq")
        # the scale of an FP8 tensor that a dense layer dequantizes at load
        and not (k.endswith(".weight_scale_inv") and k[: -len("_scale_inv")] in targets)
    ]
    # A bf16 checkpoint loaded as FP8 has no scale keys: they are produced by quantizing.
    filled: set[str] = set()
    by_file: dict[Path, list[str]] = {}
    for k, f in key_files.items():
        if k in targets:
            by_file.setdefault(f, []).append(k)
    if unexpected:
        k = unexpected[0]
        raise CheckpointError(f"unexpected tensor {k!r} in {key_files[k].name} (not part of this model; {len(unexpected)} such keys)")

    files = list(by_file)
    bar = _progress(progress, len(files))
    for f in files:
        handle = _open(f)
        for k in by_file[f]:
            if k in filled:
                continue
            src = targets[k].src
            # A shard held dense but stored FP8 off the 128-block grid: read whole, dequantize, slice.
            whole = src is not None and targets[k].param.dtype not in FP8_DTYPES and _stored_fp8(handle, k)
            t = _read(handle, k, f, None if whole else src)
            sliced = src is not None and not whole
            if sliced and k.endswith("weight_scale_inv"):
                # all zeros is the whole tensor's verdict: one rank's slice of a loadable checkpoint can be all
                # zero blocks (refused under --tp only; tester22 #5). Scales are small: read whole for the check.
                _check_scale(k, _read(handle, k, f), f)
            _fill(targets, k, t, f, key_files, filled, ops, slice_after=src if whole else None, sliced=sliced)
        bar.advance()
    bar.close()

    missing = []
    for k, tgt in targets.items():
        if k in filled:
            continue
        if tgt.optional_from and tgt.optional_from in filled:
            src = targets[tgt.optional_from]
            tgt.param.data.copy_(src.param.data if src.index is None else src.param.data[src.index])
            filled.add(k)
            continue
        missing.append(k)
    if missing:
        raise CheckpointError(
            f"missing tensor {missing[0]!r} in {folder} ({len(missing)} missing; first few: {missing[:4]})"
        )
    if cfg.tie_word_embeddings and "lm_head.weight" in key_files:
        _check_tied_head(targets, key_files["lm_head.weight"])
    for m in model.modules():  # the decode router's bf16 weight copy (its exactness check syncs: now, not later)
        if isinstance(m, MoE):
            m.gate.router_weight()
    return model.eval()


def _check_tied_head(targets: dict[str, _Target], file: Path) -> None:
    """``tie_word_embeddings: true`` with an ``lm_head.weight`` stored anyway (h2tester s25 F4). transformers and vLLM
    skip the stored head (the head is the embedding); this loader refuses any tensor that is not part of the model
    rather than guess (an unexpected key, a key in two files), and a tied model has no head of its own. So: a stored
    head equal to the embedding (as loaded, this rank's rows) is a harmless copy, like the MTP layer's copies of the
    embedding and head, and loads; one that differs means config.json or the checkpoint is wrong, and is refused by
    name. The loader used the stored head before, silently, where transformers would have used the embedding."""
    head, emb = targets["lm_head.weight"], targets["model.embed_tokens.weight"]
    if not torch.equal(head.param.data, emb.param.data if emb.index is None else emb.param.data[emb.index]):
        raise CheckpointError(
            f"tensor 'lm_head.weight' in {file.name} differs from 'model.embed_tokens.weight', but config.json says "
            "tie_word_embeddings: true (the LM head is the embedding; transformers ignores the stored head): set "
            "tie_word_embeddings to false to use the stored head, or remove it from the checkpoint")


def _read(handle, key: str, file: Path, src: tuple | None = None) -> torch.Tensor:
    try:
        if src is None:
            return handle.get_tensor(key)
        dim, a, b = src
        sl = handle.get_slice(key)
        return sl[a:b] if dim == 0 else sl[:, a:b]
    except (SafetensorError, OSError, RuntimeError) as e:
        if key not in handle.keys():  # only an index sends a key to a file without it: the file may be fine
            raise CheckpointError(f"{file.name} holds no tensor {key!r}, but model.safetensors.index.json maps it "
                                  "there (a stale index?)") from None
        raise CheckpointError(f"cannot read {key!r} from {file}: truncated or corrupted ({e})") from None


def _stored_fp8(handle, key: str) -> bool:
    try:
        return handle.get_slice(key).get_dtype().startswith("F8")
    except (SafetensorError, OSError, RuntimeError):
        return False


def _take(t: torch.Tensor, src: tuple | None) -> torch.Tensor:
    if src is None:
        return t
    dim, a, b = src
    return t[a:b] if dim == 0 else t[:, a:b]


_E8M0 = getattr(torch, "float8_e8m0fnu", None)  # UE8M0 block scales (DeepGEMM / DeepSeek-V3.1 style); torch >= 2.7


def _check_finite(key: str, t: torch.Tensor, file: Path) -> None:
    """NaN/inf in a weight only shows up later as garbage text: refuse it at load, naming the tensor."""
    if t.dtype == torch.float8_e4m3fn:
        bad = ((t.view(torch.uint8) & 0x7F) == 0x7F).any()  # e4m3fn has NaN only (S.1111.111), no inf
    elif t.dtype == _E8M0:
        bad = (t.view(torch.uint8) == 0xFF).any()  # UE8M0 scales: 0xFF is NaN, which torch.isfinite misses
    elif t.is_floating_point():
        bad = ~torch.isfinite(t).all()
    else:
        return
    if bool(bad):
        raise CheckpointError(f"tensor {key!r} in {file.name} holds NaN or inf values")


def _check_scale(key: str, t: torch.Tensor, file: Path, whole: bool = True) -> None:
    """A weight_scale_inv is a block's amax / 448: negative entries or an all-zero tensor (the whole weight
    multiplied away) are no FP8 checkpoint's scales; both loaded and gave garbage text with rc 0 (tester21 #15b).
    A zero entry alone is let through (an all-zero block may be stored with scale 0). ``whole``: ``t`` is the whole
    tensor, not a tensor-parallel slice of it (only negatives are checked on a slice). An integer scale is refused
    (it skipped the checks, and an all-zero one loaded: tester22 #11); a UE8M0 (float8_e8m0fnu) scale, a power of
    two with no sign and no zero, passes (comparing it was a NotImplementedError traceback: #11)."""
    if not key.endswith("weight_scale_inv") or t.numel() == 0:
        return
    if not t.is_floating_point():
        raise CheckpointError(f"tensor {key!r} in {file.name} has dtype {str(t.dtype).removeprefix('torch.')}; an "
                              "FP8 block scale is a float (float32, bfloat16, or float8_e8m0fnu for UE8M0 scales)")
    if t.dtype == _E8M0:
        return
    if bool((t < 0).any()):
        raise CheckpointError(f"tensor {key!r} in {file.name} holds negative values (an FP8 block scale is > 0)")
    if whole and not bool((t != 0).any()):
        raise CheckpointError(f"tensor {key!r} in {file.name} is all zeros (an FP8 block scale is > 0)")


def _check_float(key: str, t: torch.Tensor, file: Path) -> None:
    """Every tensor the model loads is a float: an integer or bool weight was cast by ``copy_`` (or quantized to FP8)
    and generated garbage with rc 0 (tester23 #1). Scales are refused earlier, with their own message."""
    if not t.is_floating_point():
        raise CheckpointError(f"tensor {key!r} in {file.name} has dtype {str(t.dtype).removeprefix('torch.')}; "
                              "weights are floats (bfloat16, float16, float32, or float8_e4m3fn with a weight_scale_inv)")


def _fill(targets, key, t, file, key_files, filled, ops: Ops, slice_after: tuple | None = None,
          sliced: bool = False) -> None:
    """Copy checkpoint tensor ``t`` (a tensor-parallel slice when ``sliced``) into its target, after the checks."""
    _check_finite(key, t, file)
    _check_scale(key, t, file, whole=not sliced)
    _check_float(key, t, file)
    tgt = targets[key]
    dest = tgt.param.data if tgt.index is None else tgt.param.data[tgt.index]
    if slice_after is None and tuple(t.shape) != tuple(dest.shape):
        raise CheckpointError(
            f"tensor {key!r} in {file.name} has shape {tuple(t.shape)}, expected {tuple(dest.shape)}"
        )
    if dest.dtype in FP8_DTYPES and t.dtype not in FP8_DTYPES:
        # bf16/fp32 checkpoint, FP8 model: quantize to 128×128 blocks now.
        scale_key = key[: -len("weight")] + "weight_scale_inv"
        if scale_key not in targets:
            raise CheckpointError(f"cannot quantize {key!r}: the model has no scale for it")
        if scale_key in key_files:  # re-quantizing would silently drop the checkpoint's own scale (tester21 #15a)
            raise CheckpointError(
                f"tensor {key!r} in {file.name} is {str(t.dtype).removeprefix('torch.')} but the checkpoint also "
                f"holds {scale_key!r} (an FP8 block scale): a weight cast from e4m3 without applying its scale? "
                "Keep it e4m3, or dequantize it (weight * scale per 128x128 block) and drop the scale")
        q, s = ops.quantize_block_fp8(t.to(dest.device, torch.float32))
        dest.copy_(q)
        sdest = targets[scale_key]
        (sdest.param.data if sdest.index is None else sdest.param.data[sdest.index]).copy_(s)
        filled.update((key, scale_key))
        return
    if t.dtype in FP8_DTYPES and dest.dtype not in FP8_DTYPES:
        # FP8 tensor for a layer the model keeps dense (e.g. an MTP eh_proj): dequantize now.
        scale_key = key[: -len("weight")] + "weight_scale_inv"
        if scale_key not in key_files:
            raise CheckpointError(f"FP8 tensor {key!r} in {file.name} has no {scale_key!r} in the checkpoint")
        scale = _read(_open(key_files[scale_key]), scale_key, key_files[scale_key])
        _check_finite(scale_key, scale, key_files[scale_key])
        _check_scale(scale_key, scale, key_files[scale_key])
        want = (_cdiv(t.shape[0], FP8_BLOCK), _cdiv(t.shape[1], FP8_BLOCK))
        if tuple(scale.shape) != want:
            raise CheckpointError(f"tensor {scale_key!r} has shape {tuple(scale.shape)}, expected {want}")
        w = _take(ops.dequant_block_fp8(t, scale, torch.float32), slice_after)
        if tuple(w.shape) != tuple(dest.shape):
            raise CheckpointError(f"tensor {key!r} in {file.name} has shape {tuple(t.shape)}, expected {tuple(dest.shape)}")
        dest.copy_(w)
        filled.update((key, scale_key))
        return
    if dest.dtype in FP8_DTYPES and key.endswith(".weight"):
        scale_key = key[: -len("weight")] + "weight_scale_inv"
        if scale_key not in key_files:
            raise CheckpointError(f"FP8 tensor {key!r} in {file.name} has no {scale_key!r} in the checkpoint")
    if key.endswith("e_score_correction_bias"):
        t = t.float()  # selection bias stays fp32 whatever the checkpoint dtype
    dest.copy_(t)
    filled.add(key)


class _progress:
    def __init__(self, enabled: bool, total: int):
        self.p = None
        if enabled:
            from rich.progress import Progress

            self.p = Progress(transient=True)
            self.p.start()
            self.task = self.p.add_task("loading shards", total=total)

    def advance(self):
        if self.p is not None:
            self.p.advance(self.task)

    def close(self):
        if self.p is not None:
            self.p.stop()
