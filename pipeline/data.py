"""Calibration and evaluation data: an ImageFolder root with train/ and test/ (or val/), or seeded
synthetic inputs when no data is given. Calibration samples are class-stratified."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from pipeline.core.errors import DataError
from pipeline.model_specs import parse_spec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
SYNTHETIC_LABEL = -1  # labels of synthetic inputs: scorers use the dense model's own prediction


@dataclass(frozen=True)
class DataSpec:
    root: Path | None
    model: str
    input_shape: tuple[int, int, int, int]

    @property
    def synthetic(self) -> bool:
        return self.root is None


def check_data_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if not (root / "train").is_dir():
        raise DataError(f"data folder {root} has no train/ folder (expected an ImageFolder root with train/ and test/ or val/)")
    eval_dir = eval_split_dir(root)
    for split in (root / "train", eval_dir):
        classes = [d for d in split.iterdir() if d.is_dir()]
        if not classes:
            raise DataError(f"{split} has no class folders (expected {split}/<class>/<image>)")
    return root


def eval_split_dir(root: Path) -> Path:
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise DataError(f"data folder {root} has no test/ or val/ folder")


def transform_for(spec: DataSpec):
    from torchvision import transforms as T

    _, channels, height, width = spec.input_shape
    model = parse_spec(spec.model)
    mean, std = model.normalisation
    steps = []
    if model.family == "torchvision" and height == width:
        steps += [T.Resize(int(round(height / 0.875))), T.CenterCrop(height)]
    else:
        steps += [T.Resize((height, width))]
    if channels == 1:
        steps.append(T.Grayscale())
        mean, std = mean[:1], std[:1]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _image_folder(spec: DataSpec, split: str) -> Dataset:
    from torchvision.datasets import ImageFolder

    root = check_data_root(spec.root)
    folder = root / "train" if split == "train" else eval_split_dir(root)
    try:
        return ImageFolder(str(folder), transform=transform_for(spec))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"cannot read images under {folder}: {err}") from None


def stratified_indices(labels: list[int], count: int, seed: int) -> list[int]:
    """`count` indices drawn evenly across classes (round-robin over shuffled per-class lists)."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    queues = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        queues.append([members[i] for i in order])
    picked: list[int] = []
    depth = 0
    while len(picked) < count and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(picked) < count:
                picked.append(queue[depth])
        depth += 1
    return picked


def synthetic_dataset(spec: DataSpec, count: int, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((count, *spec.input_shape[1:]), generator=generator)
    return TensorDataset(inputs, torch.full((count,), SYNTHETIC_LABEL, dtype=torch.long))


def calibration_loader(spec: DataSpec, count: int, batch_size: int, seed: int, offset: int = 0, workers: int = 0) -> DataLoader:
    """Class-stratified training images (or synthetic inputs), in a fixed order."""
    if spec.synthetic:
        dataset = synthetic_dataset(spec, count, seed + offset)
    else:
        train = _image_folder(spec, "train")
        indices = stratified_indices(train.targets, count + offset, seed)[offset:]
        dataset = Subset(train, indices)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def train_loader(spec: DataSpec, count: int | None, batch_size: int, seed: int, workers: int = 0) -> DataLoader:
    """Shuffled training images for distillation (synthetic inputs without data)."""
    if spec.synthetic:
        dataset = synthetic_dataset(spec, count or 1024, seed + 7)
    else:
        train = _image_folder(spec, "train")
        dataset = train if count is None else Subset(train, stratified_indices(train.targets, count, seed + 7))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, generator=generator, drop_last=len(dataset) > batch_size)


def eval_loader(spec: DataSpec, count: int | None, batch_size: int, seed: int, workers: int = 0) -> DataLoader | None:
    """The evaluation split (all of it, or a stratified subset); None without data."""
    if spec.synthetic:
        return None
    dataset = _image_folder(spec, "eval")
    if count is not None and count < len(dataset):
        dataset = Subset(dataset, stratified_indices(dataset.targets, count, seed + 1))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def num_classes(spec: DataSpec) -> int | None:
    if spec.synthetic:
        return None
    return len([d for d in (Path(spec.root) / "train").iterdir() if d.is_dir()])


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader: DataLoader | None) -> float | None:
    """Top-1 accuracy of a PyTorch model; None without data."""
    if loader is None:
        return None
    model.eval()
    correct = total = 0
    for inputs, labels in loader:
        correct += (model(inputs).argmax(1) == labels).sum().item()
        total += labels.numel()
    return correct / max(total, 1)
