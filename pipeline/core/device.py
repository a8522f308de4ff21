"""Where the PyTorch stages compute: --device auto|cpu|cuda|cuda:N|mps, resolved once per process.

Artifacts never depend on it: every tensor a stage saves is moved to the CPU first, so a run pruned
on a GPU host exports and profiles anywhere. torch is imported inside the functions, so that
`pipeline --help` stays fast."""

from __future__ import annotations

import contextlib
import os
import re

from pipeline.core.errors import ConfigError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    if not DEVICE_PATTERN.match(str(name)):
        raise ConfigError(f"unknown device '{name}'; valid: auto, cpu, cuda, cuda:N, mps")


def resolve_device(name: str = "auto", local_rank: int | None = None):
    """The torch.device for `name`: auto is CUDA when available (this process's GPU under torchrun,
    cuda:LOCAL_RANK), else MPS where PyTorch offers it, else the CPU. An unavailable device is an error."""
    import torch

    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else (local_rank or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if name == "mps" and not _mps_available():
        raise ConfigError("--device mps: the MPS backend is not available here; use --device cpu")
    return torch.device(name)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def float64_device(device):
    """Where statistics that need float64 accumulate: the device itself, except MPS (no float64)."""
    import torch

    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def to_float64(x):
    """`x` in float64 where float64 is supported: on its own device, on the CPU for MPS (which has none)."""
    return x.to(float64_device(x.device)).double()


def describe(device) -> str:
    """`cuda:0 (NVIDIA H100 80GB HBM3)`, `cpu`: what manifests and the log record."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def to_device(value, device, non_blocking: bool = False):
    """A batch (tensor, or tuple/list of them) on `device`."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device, non_blocking) for v in value)
    return value


def to_cpu(tensors: dict) -> dict:
    """{name: tensor} on the CPU, contiguous: what safetensors files hold."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}


@contextlib.contextmanager
def full_precision(device):
    """float32 matmuls and convolutions really in float32 on CUDA (no TF32): trial removal compares
    masked and pruned outputs to 1e-4 and statistics feed float64 sums, which TF32's 10-bit mantissa
    would blur. Distillation keeps PyTorch's defaults, where speed is what counts."""
    import torch

    if torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


DEVICE_MEMORY_FRACTION = 0.5  # of a CUDA device's free memory, what rows held or run at once may take


def rows_that_fit(device, row_bytes: int, cpu_rows: int) -> int:
    """How many rows (samples, or interventions x samples) of `row_bytes` each to hold or run at once.

    On CUDA, as many as fit in DEVICE_MEMORY_FRACTION of the free device memory (the driver's free
    bytes plus what PyTorch's allocator holds unused), at least one: device memory is small next to
    the host's, and the fixed host sizes would waste a large GPU or overflow a small one. The other
    half is headroom for fragmentation, cuDNN workspaces and the temporaries the masks make.
    Elsewhere `cpu_rows`, a fixed count, so that results never depend on the memory free at the time."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return cpu_rows
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, int(free * DEVICE_MEMORY_FRACTION) // max(row_bytes, 1))


def forward_bytes(model, inputs) -> int:
    """Device memory a one-row forward pass of `model` allocates at its peak, its input included (CUDA;
    0 elsewhere): the bytes per row that `rows_that_fit` divides the free memory by."""
    import torch

    if inputs.device.type != "cuda":
        return 0
    torch.cuda.synchronize(inputs.device)
    torch.cuda.reset_peak_memory_stats(inputs.device)
    before = torch.cuda.memory_allocated(inputs.device)
    with torch.no_grad():
        model(inputs[:1].clone())
    return torch.cuda.max_memory_allocated(inputs.device) - before
