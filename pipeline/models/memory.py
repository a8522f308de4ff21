"""memory:KEY, an nn.Module handed to the Python API (pipeline.run). Every stage of the process
gets its own copy; KEY carries a hash of the architecture and weights, so a changed model re-runs
the stages that depend on it."""

from __future__ import annotations

import hashlib

import torch.nn as nn

from pipeline.core.errors import ModelError
from pipeline.models.clone import clone_model
from pipeline.models.specs import Preprocessing

_MODELS: dict[str, nn.Module] = {}


def register(model: nn.Module) -> str:
    """The spec (`memory:KEY`) under which the stages of this process find `model`."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    key = f"{type(model).__name__}-{digest.hexdigest()[:16]}"
    _MODELS[key] = model
    return f"memory:{key}"


class MemoryFamily:
    def check(self, name: str) -> None:
        if name not in _MODELS:
            raise ModelError(
                f"model 'memory:{name}' was handed to pipeline.run in another process; pass the same "
                "nn.Module again (pipeline.run or pipeline.load_pruned(run_dir, model=...))"
            )

    def build(self, name: str, num_classes: int | None, args: dict) -> nn.Module:
        self.check(name)
        return clone_model(_MODELS[name])

    def preprocessing(self, name: str, args: dict) -> Preprocessing:
        return Preprocessing((3, 224, 224), crop_pct=1.0)
