"""Seeded loaders over the datasets of a DataSpec (or synthetic inputs when no data is given):
calibration samples are class-stratified where labels are cheap to read, else a seeded random subset."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from pipeline.data.sources import DataSpec, datasets, labels_of

SYNTHETIC_LABEL = -1  # labels of synthetic inputs: scorers use the dense model's own prediction


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


def sample_indices(dataset, count: int, seed: int) -> list[int]:
    """`count` indices, class-stratified when the labels are cheap to read, else seeded random."""
    labels = labels_of(dataset)
    if labels is not None:
        return stratified_indices(labels, count, seed)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return order[:count]


def calibration_loader(spec: DataSpec, count: int, batch_size: int, seed: int, offset: int = 0, workers: int = 0) -> DataLoader:
    """Class-stratified training images (or synthetic inputs), in a fixed order."""
    if spec.synthetic:
        dataset = synthetic_dataset(spec, count, seed + offset)
    else:
        train = datasets(spec)[0]
        dataset = Subset(train, sample_indices(train, count + offset, seed)[offset:])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def train_loader(spec: DataSpec, count: int | None, batch_size: int, seed: int, workers: int = 0) -> DataLoader:
    """Shuffled training images for distillation (synthetic inputs without data)."""
    if spec.synthetic:
        dataset = synthetic_dataset(spec, count or 1024, seed + 7)
    else:
        train = datasets(spec)[0]
        dataset = train if count is None else Subset(train, sample_indices(train, count, seed + 7))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=generator,
        drop_last=len(dataset) > batch_size,
    )


def eval_loader(spec: DataSpec, count: int | None, batch_size: int, seed: int, workers: int = 0) -> DataLoader | None:
    """The evaluation split (all of it, or a stratified subset); None without data."""
    dataset = None if spec.synthetic else datasets(spec)[1]
    if dataset is None:
        return None
    if count is not None and count < len(dataset):
        dataset = Subset(dataset, sample_indices(dataset, count, seed + 1))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


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
