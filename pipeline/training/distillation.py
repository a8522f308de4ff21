"""Fine-tuning a pruned student: knowledge distillation from the dense teacher, and the training-time
regularisers a criterion may ask for (Class-Aware Pruning's L1 and kernel orthogonality)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core import distributed
from pipeline.core.errors import ArtifactError
from pipeline.core.log import info
from pipeline.data.loaders import SYNTHETIC_LABEL


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels); KD alone without labels."""
    soft = (
        F.kl_div(
            F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1), reduction="batchmean"
        )
        * temperature**2
    )
    if (labels == SYNTHETIC_LABEL).any():
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def logits_of(output) -> torch.Tensor:
    """Training-mode outputs of models with auxiliary heads are tuples (logits first)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def orthogonality_penalty(conv: nn.Conv2d) -> torch.Tensor:
    """|| conv2d(K, K, padding=1) - I_centre ||_F: the kernel-orthogonality term of OCNN that
    Class-Aware Pruning trains with, for 3x3 stride-1 convs."""
    kernel = conv.weight
    product = F.conv2d(kernel, kernel, padding=1)  # (out, out, 3, 3)
    target = torch.zeros_like(product)
    centre = kernel.shape[-1] // 2
    target[:, :, centre, centre] = torch.eye(kernel.shape[0], dtype=kernel.dtype)
    return torch.linalg.norm(product - target)


def class_aware_penalty(model: nn.Module, l1_lambda: float = 1e-4, orth_lambda: float = 0.01) -> torch.Tensor:
    """l1_lambda * sum of |theta| over all parameters + orth_lambda * orthogonality of 3x3 convs."""
    l1 = sum(p.abs().sum() for p in model.parameters())
    orth = sum(
        orthogonality_penalty(m)
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1
    )
    return l1_lambda * l1 + orth_lambda * orth


def make_optimizer(name: str, params, lr: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def resolve_amp(name: str, device) -> str:
    """--amp auto: bf16 on CUDA devices that support it, else off (on the CPU mixed precision is slower
    than float32 for most convolutions; ask for it with --amp bf16)."""
    if name != "auto":
        return name
    device = torch.device(device)
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How a pruned student is fine-tuned (the run's --distill-* flags, --regularize and --amp)."""

    epochs: int
    optimizer: str = "sgd"
    lr: float = 0.01
    temperature: float = 4.0
    alpha: float = 0.9
    regularise: str = "none"
    amp: str = "off"  # bf16 | fp16 | off, resolved for the device (resolve_amp)
    channels_last: bool = False  # NHWC activations and weights: what CUDA's convolution kernels run fastest


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    loader,
    options: TrainingOptions,
    *,
    on_batch=None,
    on_epoch=None,
    checkpoint: Path | None = None,
    history: list | None = None,
) -> list[float]:
    """Distil `teacher` into `student` for `epochs` (one-cycle schedule) on the device the student is
    on; returns each epoch's mean loss (over every process under torchrun).

    Under torchrun the student trains wrapped in DistributedDataParallel (BatchNorm synchronised across
    GPUs on CUDA), each process on its share of the batches (`loader`), and only rank 0 calls
    `on_epoch` (whose return values are appended to `history`) and writes the checkpoint. With
    `checkpoint`, everything an epoch leaves (weights, optimiser, schedule, gradient scaler, random
    states, losses, history) is saved there after it, and a checkpoint found at the start is resumed
    from: a killed run re-run ends as if never killed."""
    process = distributed.current()
    device = next(student.parameters()).device
    teacher.eval()
    if options.channels_last:
        student.to(memory_format=torch.channels_last)
        teacher.to(memory_format=torch.channels_last)
    trained = _parallel(student, device) if process.distributed else student
    epochs = options.epochs
    opt = make_optimizer(options.optimizer, student.parameters(), options.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=options.lr, total_steps=max(1, epochs * len(loader)), pct_start=0.1
    )
    amp_dtype = getattr(torch, AMP_DTYPES[options.amp]) if options.amp in AMP_DTYPES else None
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp == "fp16")  # fp16 gradients underflow unscaled
    history = [] if history is None else history
    losses, done = [], 0
    if checkpoint is not None and checkpoint.is_file():
        done, losses = _resume(checkpoint, student, opt, schedule, scaler, loader, history)
    for epoch in range(done + 1, epochs + 1):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        trained.train()
        total, batches = torch.zeros((), device=device), 0
        for inputs, labels in loader:
            if options.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                with torch.no_grad():  # the teacher's logits, once per batch
                    teacher_logits = logits_of(teacher(inputs))
                student_logits = logits_of(trained(inputs))
            loss = distillation_loss(student_logits.float(), teacher_logits.float(), labels, options.temperature, options.alpha)
            if options.regularise == "class-aware":
                loss = loss + class_aware_penalty(student)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            schedule.step()
            total, batches = total + loss.detach(), batches + 1
            if on_batch is not None:
                on_batch()
        trained.eval()
        losses.append(distributed.mean(total.item() / max(batches, 1)))
        if process.is_main:
            history.append(on_epoch(epoch, losses[-1]) if on_epoch is not None else None)
        rng = distributed.gather(_rng_state(device))  # every process's, so each resumes with its own
        if checkpoint is not None and process.is_main:
            _save_checkpoint(checkpoint, epoch, student, opt, schedule, scaler, loader, losses, history, rng)
        distributed.barrier()  # the others wait while rank 0 evaluates and saves
    if options.channels_last:
        student.to(memory_format=torch.contiguous_format)
    return losses


def _parallel(student: nn.Module, device) -> nn.Module:
    """The student wrapped for DistributedDataParallel; on CUDA with synchronised BatchNorm, so that
    N GPUs normalise over the global batch as one process would (gloo on the CPU has no SyncBatchNorm:
    there each process normalises over its own share)."""
    from torch.nn.parallel import DistributedDataParallel

    module = nn.SyncBatchNorm.convert_sync_batchnorm(student) if device.type == "cuda" else student
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _rng_state(device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save_checkpoint(path: Path, epoch: int, student, opt, schedule, scaler, loader, losses, history, rng) -> None:
    generator = getattr(loader, "generator", None)
    state = {
        "epoch": epoch,
        "student": student.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "loader_rng": generator.get_state() if generator is not None else None,
        "losses": losses,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill while saving leaves the previous epoch's checkpoint whole


def _resume(path: Path, student, opt, schedule, scaler, loader, history: list) -> tuple[int, list[float]]:
    process = distributed.current()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if len(state["rng"]) != process.world_size:
        raise ArtifactError(
            f"{path} was written by {len(state['rng'])} process(es), this distillation runs {process.world_size}; "
            "re-run with the same number of processes, or delete the checkpoint to start over"
        )
    student.load_state_dict(state["student"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])
    rng = state["rng"][process.rank]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], next(student.parameters()).device)
    generator = getattr(loader, "generator", None)
    if generator is not None and state["loader_rng"] is not None:
        generator.set_state(state["loader_rng"])  # the next epoch shuffles as it would have
    history[:] = state["history"]
    info(f"distill: resumed after epoch {state['epoch']} from {path}")
    return state["epoch"], list(state["losses"])
