"""NaN-poisoned output allocation for kernel tests: proves a launcher's kernel writes every output element."""

from __future__ import annotations

import types

import torch


class PoisonTorch(types.SimpleNamespace):
    """Stands in for a kernel module's ``torch``: ``empty`` returns NaN-filled tensors, all else is torch."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*shape, dtype=None, device=None):
        return torch.full(*shape, float("nan"), dtype=dtype, device=device)


def poison_outputs(monkeypatch, module) -> None:
    """Make ``module``'s launchers allocate NaN-filled outputs for the rest of the test (stateless, so
    sharing it across hypothesis examples is fine)."""
    monkeypatch.setattr(module, "torch", PoisonTorch())
