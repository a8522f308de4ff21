"""Seeded loaders over the datasets of a DataSpec (or synthetic inputs when no data is given):
calibration samples are class-stratified where labels are cheap to read, else a seeded random subset."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from pipeline.core.device import available_cores, to_device
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


def calibration_loader(
    spec: DataSpec, count: int, batch_size: int, seed: int, offset: int = 0, workers: int | None = 0, device=None
) -> DeviceLoader:
    """Class-stratified training images (or synthetic inputs), in a fixed order."""
    if spec.synthetic:
        dataset = synthetic_dataset(spec, count, seed + offset)
    else:
        train = datasets(spec)[0]
        dataset = Subset(train, sample_indices(train, count + offset, seed)[offset:])
    return _loader(dataset, batch_size, workers, device, spec.synthetic)


def train_loader(
    spec: DataSpec, count: int | None, batch_size: int, seed: int, workers: int | None = 0, device=None, rank: int = 0,
    world_size: int = 1,
) -> DeviceLoader:  # fmt: skip
    """Shuffled training images for distillation (synthetic inputs without data)."""
    if spec.synthetic:
        dataset = synthetic_dataset(spec, count or 1024, seed + 7)
    else:
        train = datasets(spec)[0]
        dataset = train if count is None else Subset(train, sample_indices(train, count, seed + 7))
    return shuffled_loader(dataset, batch_size, seed, workers, device, rank, world_size, in_memory=spec.synthetic)


def shuffled_loader(
    dataset, batch_size: int, seed: int, workers: int | None = 0, device=None, rank: int = 0, world_size: int = 1,
    in_memory: bool = False,
) -> DeviceLoader:  # fmt: skip
    """`batch_size` per process. The order is a permutation seeded by (seed, epoch) and process r takes
    every world_size-th index from r, so one process with batch B x N sees, batch by batch, the union
    of what N processes with batch B see: the same global batches (call set_epoch every epoch)."""
    drop_last = len(dataset) > batch_size * world_size
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
    return _loader(dataset, batch_size, workers, device, in_memory, sampler=sampler, drop_last=drop_last)


def eval_loader(
    spec: DataSpec, count: int | None, batch_size: int, seed: int, workers: int | None = 0, device=None
) -> DeviceLoader | None:
    """The evaluation split (all of it, or a stratified subset); None without data."""
    dataset = None if spec.synthetic else datasets(spec)[1]
    if dataset is None:
        return None
    if count is not None and count < len(dataset):
        dataset = Subset(dataset, sample_indices(dataset, count, seed + 1))
    return _loader(dataset, batch_size, workers, device, spec.synthetic)


MIN_BATCHES_FOR_WORKERS = 8  # below this, starting worker processes costs more than they save


def default_workers(batches: int, in_memory: bool, processes_here: int = 1) -> int:
    """DataLoader workers when --workers is not given: a share of this process's cores, one left to
    the training loop, at most 8; none for tensors already in memory or a loader of a few batches."""
    if in_memory or batches < MIN_BATCHES_FOR_WORKERS:
        return 0
    return max(0, min(8, available_cores() // max(processes_here, 1) - 1))


def _loader(dataset, batch_size: int, workers: int | None, device, in_memory: bool, sampler=None, drop_last=False):
    from pipeline.core.distributed import current

    device = torch.device(device or "cpu")
    if workers is None:
        batches = -(-len(dataset) // batch_size)
        workers = default_workers(batches, in_memory or isinstance(dataset, TensorDataset), current().local_world_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )
    return DeviceLoader(loader, device)


class DeviceLoader:
    """A DataLoader whose batches arrive on `device` (asynchronously from pinned memory on CUDA)."""

    def __init__(self, loader: DataLoader, device):
        self.loader, self.device = loader, device
        self.non_blocking = device.type == "cuda"

    def __iter__(self):
        for batch in self.loader:
            yield to_device(batch, self.device, self.non_blocking)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self):
        return self.loader.dataset

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for this epoch (training loaders); a no-op for the others."""
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)


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
