"""Several processes under torchrun: who this process is, and how the processes agree.

`torchrun --nproc_per_node=N -m pipeline run ...` starts N copies of the same command. Each joins
the process group torchrun describes in its environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR):
NCCL where the stages compute on CUDA, gloo on the CPU. Rank 0 runs every stage but distillation
while the others wait; all of them train; only rank 0 writes. Waiting goes through a second, gloo
group with a long timeout, because the stages before distillation (C-SWAP's interventions, a large
model's calibration) can take longer than the default group's watchdog allows a collective."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

WAIT_TIMEOUT = timedelta(hours=12)  # how long the other ranks wait for rank 0's stages


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_current = Process()
_coordination = None  # the gloo group used for waiting and sharing small objects


def current() -> Process:
    return _current


def launched() -> Process | None:
    """This process's place under torchrun (or any launcher that sets WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Process(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


@contextlib.contextmanager
def session(device):
    """Join the process group for the duration of a command (a no-op for a single process)."""
    global _current, _coordination
    process = launched()
    if process is None or _current.distributed:  # one process, or already joined (a nested call)
        yield _current
        return
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend)
    _coordination = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    _current = process
    try:
        yield process
    finally:
        _current, group = Process(), _coordination
        _coordination = None
        dist.destroy_process_group(group)
        dist.destroy_process_group()


def barrier() -> None:
    if _current.distributed:
        import torch.distributed as dist

        dist.barrier(group=_coordination)


def broadcast(value):
    """Rank 0's `value`, on every rank."""
    if not _current.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_coordination)
    return box[0]


def gather(value) -> list:
    """Every rank's `value`, in rank order, on every rank."""
    if not _current.distributed:
        return [value]
    import torch.distributed as dist

    values = [None] * _current.world_size
    dist.all_gather_object(values, value, group=_coordination)
    return values


def mean(value: float) -> float:
    """The mean of a number over the ranks."""
    values = gather(float(value))
    return sum(values) / len(values)


@contextlib.contextmanager
def every_core():
    """While rank 0 runs a stage alone, its PyTorch ops may use every core this process may run on:
    torchrun sets OMP_NUM_THREADS=1 for each process, which suits the processes training side by
    side but leaves the others' cores idle while they wait."""
    import torch

    from pipeline.core.device import available_cores

    before = torch.get_num_threads()
    torch.set_num_threads(max(before, available_cores()))
    try:
        yield
    finally:
        torch.set_num_threads(before)
