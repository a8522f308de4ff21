"""Model specs and preprocessing, without importing torch: `torchvision:NAME`, `timm:NAME`,
`cifar:resnetN`, `package.module:factory` or `path/to/file.py:factory`."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import ModelError

NAMED_FAMILIES = ("torchvision", "timm", "cifar", "memory")  # any other spec with a colon is a factory
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    family: str
    name: str
    text: str


@dataclass(frozen=True)
class Preprocessing:
    """How images become the model's input: resize (shorter side to size / crop_pct), centre crop,
    normalise. crop_pct 1 crops nothing from a square image."""

    input_size: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


def parse_spec(text: str) -> ModelSpec:
    family, sep, name = str(text).partition(":")
    if not sep or not name or not family:
        raise ModelError(
            f"model spec '{text}' must look like torchvision:NAME, timm:NAME, cifar:resnet56, "
            "package.module:factory or path/to/file.py:factory"
        )
    if family in NAMED_FAMILIES:
        return ModelSpec(family, name, text)
    return ModelSpec("factory", text, text)
