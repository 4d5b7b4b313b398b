"""README claims checked against the tree (tester, session 20: the default model's size and the list of reference
modules were wrong)."""

from __future__ import annotations

import re
from pathlib import Path

import tritonseek.kernels.reference as reference

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _modules() -> list[str]:
    return sorted(p.stem for p in Path(reference.__file__).parent.glob("*.py") if p.stem != "__init__")


def test_reference_modules_are_all_named():
    """README named seven of the modules (not mla_absorb); the package docstring five. The package docstring names
    every one; README every one holding a public launcher's reference (spec_step's kernels are the engine's)."""
    doc = " ".join(reference.__doc__.split())
    missing = [m for m in _modules() if not re.search(rf"\b{m}\b", doc)]
    assert not missing, f"tritonseek.kernels.reference docstring does not name {missing}"
    listed = re.search(r"a module of `tritonseek\.kernels\.reference`\s*\(([^)]*)\)", README)
    assert listed, "README's list of reference modules not found"
    named = sorted(re.findall(r"`(\w+)`", listed.group(1)))
    assert named == [m for m in _modules() if m != "spec_step"]


def test_default_model_sizes_are_true():
    """README said "11.9 MB of FP8 weights" for an 11.6 MB file of which 2.9 MB are e4m3 and 8.7 MB bf16."""
    from safetensors import safe_open

    path = ROOT / "tritonseek" / "data" / "default_model" / "model.safetensors"
    by_dtype: dict[str, int] = {}
    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            by_dtype[str(t.dtype)] = by_dtype.get(str(t.dtype), 0) + t.numel() * t.element_size()
    m = re.search(r"an ([\d.]+) MB checkpoint: ([\d.]+) MB of FP8 \(e4m3\) [^,]*, ([\d.]+) MB of bf16", README)
    assert m, "README's default model size sentence not found"
    total, fp8, bf16 = (float(g) for g in m.groups())
    assert total == round(path.stat().st_size / 1e6, 1)
    assert fp8 == round(by_dtype["torch.float8_e4m3fn"] / 1e6, 1)
    assert bf16 == round(by_dtype["torch.bfloat16"] / 1e6, 1)
