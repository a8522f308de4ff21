"""Copies of models that hold tensors cached by earlier forward passes."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def clone_model(model: nn.Module) -> nn.Module:
    """copy.deepcopy, after detaching tensors that forward passes cached on modules (attention-bias
    caches): deepcopy refuses tensors that are part of an autograd graph."""
    for module in model.modules():
        for key, value in list(vars(module).items()):
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, key, value.detach())
            elif isinstance(value, dict) and any(isinstance(v, torch.Tensor) and v.grad_fn is not None for v in value.values()):
                setattr(module, key, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in value.items()})
    return copy.deepcopy(model)
