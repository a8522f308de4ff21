"""One forward pass with hooks attached, the hooks removed after whatever happens."""

from __future__ import annotations

import torch


def forward_once(model: torch.nn.Module, example: torch.Tensor, handles: list) -> None:
    """Run `model` on `example` in eval mode without autograd, then remove `handles` (its hooks)."""
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
