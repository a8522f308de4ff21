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
        keywords = _transform_keywords(_weights_entry(name, args.get("image_size")))
        crop = int(args.get("image_size") or keywords.get("crop_size", 224))
        resize = int(keywords.get("resize_size", round(crop / 0.875)))
        interpolation = getattr(keywords.get("interpolation"), "value", "bilinear")
        return Preprocessing((3, crop, crop), interpolation=interpolation, crop_pct=crop / resize)


def _weights_entry(name: str, image_size: int | None):
    """The weights entry whose preprocessing fits the model as built. A fixed-size architecture (a
    ViT: its entries' min_size is its input size) is built without weights at the builder's default
    size, the smallest of its entries, unless `image_size` says otherwise; torchvision applies a
    larger entry's size (vit_h_14's 518) only when it downloads that entry's weights."""
    import torchvision

    try:
        entries = list(torchvision.models.get_model_weights(name))
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None
    fixed = [w for w in entries if w.meta.get("min_size", (1, 1))[0] > 1]
    if image_size:
        return next((w for w in entries if _transform_keywords(w).get("crop_size") == int(image_size)), default)
    if default in fixed:
        return min(fixed, key=lambda w: w.meta["min_size"][0])
    return default


def _transform_keywords(entry) -> dict:
    return dict(getattr(getattr(entry, "transforms", None), "keywords", {}) or {})
