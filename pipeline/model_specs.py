"""Model specs, without importing torch: `torchvision:NAME`, `cifar:resnetN`, `package.module:factory`."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import ModelError

FAMILIES = {
    "torchvision": "torchvision:NAME, any classification model of torchvision.models (random init unless --weights)",
    "cifar": "cifar:resnet20|32|44|56|110, CIFAR ResNets with option-A shortcuts (He et al. 2016)",
    "factory": "package.module:factory, a function of yours that returns an nn.Module",
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    family: str
    name: str
    text: str

    @property
    def default_input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, 32, 32) if self.family == "cifar" else (1, 3, 224, 224)

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # The CIFAR checkpoints in ../shared were trained with ImageNet statistics too.
        return IMAGENET_MEAN, IMAGENET_STD


def parse_spec(text: str) -> ModelSpec:
    family, sep, name = text.partition(":")
    if not sep or not name:
        raise ModelError(f"model spec '{text}' must look like torchvision:NAME, cifar:resnet56 or package.module:factory")
    if family in ("torchvision", "cifar"):
        return ModelSpec(family, name, text)
    return ModelSpec("factory", text, text)
