"""Model specs -> nn.Module: the family builds it, the checkpoint loads, attention is converted.

Checkpoints load with weights_only=True; a `module.` prefix (DataParallel) is stripped; a checkpoint
that does not fit names the first key that differs."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.core.errors import ModelError
from pipeline.core.log import info
from pipeline.models import FAMILIES
from pipeline.models.attention import convert_attention
from pipeline.models.specs import Preprocessing, parse_spec

# where training checkpoints keep the weights; timm's EMA weights first, as timm itself loads them
CHECKPOINT_KEYS = ("state_dict_ema", "state_dict", "model_state_dict", "model", "module")


def family_of(spec_text: str):
    return FAMILIES.load(parse_spec(spec_text).family)()


def preprocessing_of(spec_text: str, model_args: dict | None = None) -> Preprocessing:
    return family_of(spec_text).preprocessing(parse_spec(spec_text).name, dict(model_args or {}))


def build_model(
    spec_text: str, weights: str | None = None, num_classes: int | None = None, model_args: dict | None = None
) -> nn.Module:
    """A dense model in eval mode, weights loaded, attention converted for head pruning."""
    spec, family, args = parse_spec(spec_text), family_of(spec_text), dict(model_args or {})
    model = family.build(spec.name, num_classes, args)
    if weights is not None:
        state = read_checkpoint(weights)
        classes = _checkpoint_classes(model, state)
        if classes is not None and num_classes is None:
            model = family.build(spec.name, classes, args)
        load_state(model, state, source=str(weights), spec=spec_text)
    convert_attention(model)
    return model.eval()


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
    for key in CHECKPOINT_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict) and loaded[key]:
            if key != "state_dict" and "state_dict" in loaded:
                info(f"weights: using '{key}' of {path.name}")
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    prefix = "module."
    if all(k.startswith(prefix) for k in loaded):
        loaded = OrderedDict((k[len(prefix) :], v) for k, v in loaded.items())
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
    load_weights(model, state)


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], strict: bool = False) -> None:
    """load_state_dict with the model's own per-module metadata (`version`, read by some modules'
    _load_from_state_dict), which safetensors files and plain dicts do not carry."""
    state = OrderedDict(tensors)
    state._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=strict)


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's state dict as safetensors. safetensors refuses tensors that share memory (tied
    weights, one buffer under two names): each such name gets its own copy, and loading into the
    rebuilt model writes both copies into the one shared tensor again."""
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        tensors[name] = tensor.contiguous() if key not in seen and tensor.numel() else tensor.clone().contiguous()
        seen.add(key)
    save_file(tensors, str(path))
