"""Model specs -> nn.Module: `torchvision:NAME`, `cifar:resnetN`, `package.module:factory`.

Checkpoints load with weights_only=True; a `module.` prefix (DataParallel) is stripped; a checkpoint
that does not fit names the first key that differs."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.attention import convert_attention
from pipeline.core.errors import ModelError
from pipeline.model_specs import ModelSpec, parse_spec

def build_model(spec_text: str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    """A dense model in eval mode, weights loaded, attention converted for head pruning."""
    spec = parse_spec(spec_text)
    model = _construct(spec, num_classes)
    if weights is not None:
        state = read_checkpoint(weights)
        classes = _checkpoint_classes(model, state)
        if classes is not None and num_classes is None:
            model = _construct(spec, classes)
        load_state(model, state, source=str(weights), spec=spec_text)
    convert_attention(model)
    return model.eval()


def _construct(spec: ModelSpec, num_classes: int | None) -> nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if spec.family == "cifar":
        from pipeline.cifar_resnet import DEPTHS, cifar_resnet

        depth = spec.name.removeprefix("resnet")
        if not depth.isdigit() or int(depth) not in DEPTHS:
            valid = "|".join(f"resnet{d}" for d in DEPTHS)
            raise ModelError(f"unknown CIFAR model '{spec.name}'; valid: cifar:{valid}")
        return cifar_resnet(int(depth), **kwargs)
    if spec.family == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if spec.name not in names:
            raise ModelError(f"unknown torchvision classification model '{spec.name}'; e.g. resnet18, mobilenet_v2, vit_b_16 (see torchvision.models.list_models())")
        return torchvision.models.get_model(spec.name, weights=None, **kwargs)
    module_name, _, attr = spec.name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ModelError(f"cannot import model factory '{spec.name}' ({err}); model specs are torchvision:NAME, "
                         f"cifar:resnetN or package.module:factory") from None
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory '{spec.name}' returned {type(model).__name__}, not an nn.Module")
    return model


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code, corrupt files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load {path} with weights_only=True: {first_line}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    prefix = "module."
    if loaded and all(k.startswith(prefix) for k in loaded):
        loaded = {k[len(prefix):]: v for k, v in loaded.items()}
    return loaded


def _checkpoint_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The class count of a checkpoint whose classifier differs from the model's default."""
    last_linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last_linear:
        return None
    key = f"{last_linear[-1]}.weight"
    own = model.state_dict().get(key)
    theirs = state.get(key)
    if own is not None and theirs is not None and own.shape[1:] == theirs.shape[1:] and own.shape[0] != theirs.shape[0]:
        return int(theirs.shape[0])
    return None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, spec: str) -> None:
    own = model.state_dict()
    for key in own:
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise ModelError(f"{source} does not fit {spec}: first mismatching key '{key}' is missing from the checkpoint")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise ModelError(
                f"{source} does not fit {spec}: first mismatching key '{key}' has shape "
                f"{list(state[key].shape)} in the checkpoint, {list(own[key].shape)} in the model"
            )
    for key in state:
        if key not in own:
            raise ModelError(f"{source} does not fit {spec}: first mismatching key '{key}' is not in the model")
    model.load_state_dict(state, strict=False)
