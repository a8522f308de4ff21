"""Distils a tiny student under whatever launched it (python, or torchrun with N processes) and
saves rank 0's weights and losses: the test compares one process with N at the same global batch."""

import sys

import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from pipeline.core import distributed
from pipeline.data.loaders import shuffled_loader
from pipeline.training.distillation import TrainingOptions, finetune


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))


def main(out: str, per_process_batch: int) -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 2, 2, generator=generator), torch.randint(0, 3, (48,), generator=generator))
    with distributed.session("cpu") as process:
        student, teacher = net(0), net(1).eval()
        loader = shuffled_loader(data, per_process_batch, seed=3, rank=process.rank, world_size=process.world_size)
        losses = finetune(student, teacher, loader, TrainingOptions(epochs=3, lr=0.05))
        if process.is_main:
            torch.save({"state": student.state_dict(), "losses": losses, "world_size": process.world_size}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
