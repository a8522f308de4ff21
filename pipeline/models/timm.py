"""timm:NAME, any model timm can create (random init; --weights loads what timm users keep on disk).
Input size, mean/std, interpolation and crop come from the model's pretrained config, read offline."""

from __future__ import annotations

import torch.nn as nn

from pipeline.core.errors import ModelError
from pipeline.models.specs import Preprocessing


class TimmFamily:
    def check(self, name: str) -> None:
        import timm

        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5, cutoff=0.75)
            hint = f"; close names: {', '.join(close)}" if close else " (see timm.list_models())"
            raise ModelError(f"unknown timm model '{name}'{hint}")

    def build(self, name: str, num_classes: int | None, args: dict) -> nn.Module:
        import timm

        self.check(name)
        kwargs = {**args, **({} if num_classes is None else {"num_classes": num_classes})}
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, ValueError, AssertionError) as err:
            raise ModelError(f"timm:{name} cannot be built with {kwargs}: {err}") from None

    def preprocessing(self, name: str, args: dict) -> Preprocessing:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        if cfg is None:
            return Preprocessing((3, 224, 224))
        size = args.get("img_size", cfg.input_size[1:])  # a model argument can change the input size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return Preprocessing(
            (int(cfg.input_size[0]), *map(int, size)),
            tuple(cfg.mean),
            tuple(cfg.std),
            cfg.interpolation or "bilinear",
            cfg.crop_pct,
        )
