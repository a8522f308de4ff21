"""package.module:factory or path/to/file.py:factory: a function of the user's that returns an
nn.Module, called with num_classes (when the data or checkpoint sets it) and --model-arg values."""

from __future__ import annotations

import torch.nn as nn

from pipeline.core.errors import ModelError
from pipeline.core.imports import load_object
from pipeline.models.specs import Preprocessing


class FactoryFamily:
    def check(self, name: str) -> None:
        if not callable(load_object(name, "model factory", ModelError)):
            raise ModelError(f"model factory '{name}' is not callable")

    def build(self, name: str, num_classes: int | None, args: dict) -> nn.Module:
        self.check(name)
        factory = load_object(name, "model factory", ModelError)
        kwargs = {**args, **({} if num_classes is None else {"num_classes": num_classes})}
        try:
            model = factory(**kwargs)
        except TypeError as err:
            raise ModelError(f"model factory '{name}' cannot be called with {sorted(kwargs)}: {err}") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model factory '{name}' returned {type(model).__name__}, not an nn.Module")
        return model

    def preprocessing(self, name: str, args: dict) -> Preprocessing:
        return Preprocessing((3, 224, 224), crop_pct=1.0)
