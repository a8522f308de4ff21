"""torchvision:NAME, any classification model of torchvision.models; preprocessing from the
model's own weights entry (crop and resize sizes, interpolation), read offline."""

from __future__ import annotations

import torch.nn as nn

from pipeline.core.errors import ModelError
from pipeline.models.specs import Preprocessing


class TorchvisionFamily:
    def names(self) -> list[str]:
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)

    def check(self, name: str) -> None:
        if name not in self.names():
            raise ModelError(
                f"unknown torchvision classification model '{name}'; e.g. resnet18, mobilenet_v2, "
                "vit_b_16 (see torchvision.models.list_models())"
            )

    def build(self, name: str, num_classes: int | None, args: dict) -> nn.Module:
        import torchvision

        self.check(name)
        kwargs = {**args, **({} if num_classes is None else {"num_classes": num_classes})}
        try:
            return torchvision.models.get_model(name, weights=None, **kwargs)
        except (TypeError, ValueError) as err:
            raise ModelError(f"torchvision:{name} cannot be built with {kwargs}: {err}") from None

    def preprocessing(self, name: str, args: dict) -> Preprocessing:
        import torchvision

        try:
            keywords = dict(getattr(torchvision.models.get_model_weights(name).DEFAULT.transforms, "keywords", {}))
        except (ValueError, KeyError, AttributeError):
            keywords = {}
        crop = int(keywords.get("crop_size", 224))
        resize = int(keywords.get("resize_size", round(crop / 0.875)))
        interpolation = getattr(keywords.get("interpolation"), "value", "bilinear")
        return Preprocessing((3, crop, crop), interpolation=interpolation, crop_pct=crop / resize)
