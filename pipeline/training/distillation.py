"""Fine-tuning a pruned student: knowledge distillation from the dense teacher, and the training-time
regularisers a criterion may ask for (Class-Aware Pruning's L1 and kernel orthogonality)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

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


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How a pruned student is fine-tuned (the run's --distill-* flags and --regularize)."""

    epochs: int
    optimizer: str = "sgd"
    lr: float = 0.01
    temperature: float = 4.0
    alpha: float = 0.9
    regularise: str = "none"


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
    """Distil `teacher` into `student` for `epochs` (one-cycle schedule); returns each epoch's mean loss.

    `on_epoch(epoch, loss)`'s return values are appended to `history`. With `checkpoint`, everything an
    epoch leaves (weights, optimiser, schedule, random states, losses, history) is saved there after
    it, and a checkpoint found at the start is resumed from: a killed run re-run ends as if never killed."""
    teacher.eval()
    epochs = options.epochs
    opt = make_optimizer(options.optimizer, student.parameters(), options.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=options.lr, total_steps=max(1, epochs * len(loader)), pct_start=0.1
    )
    history = [] if history is None else history
    losses, done = [], 0
    if checkpoint is not None and checkpoint.is_file():
        done, losses = _resume(checkpoint, student, opt, schedule, loader, history)
    for epoch in range(done + 1, epochs + 1):
        student.train()
        total, batches = 0.0, 0
        for inputs, labels in loader:
            with torch.no_grad():  # the teacher's logits, once per batch
                teacher_logits = logits_of(teacher(inputs))
            loss = distillation_loss(logits_of(student(inputs)), teacher_logits, labels, options.temperature, options.alpha)
            if options.regularise == "class-aware":
                loss = loss + class_aware_penalty(student)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total, batches = total + loss.item(), batches + 1
            if on_batch is not None:
                on_batch()
        student.eval()
        losses.append(total / max(batches, 1))
        history.append(on_epoch(epoch, losses[-1]) if on_epoch is not None else None)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, epoch, student, opt, schedule, loader, losses, history)
    return losses


def _save_checkpoint(path: Path, epoch: int, student, opt, schedule, loader, losses, history) -> None:
    generator = getattr(loader, "generator", None)
    state = {
        "epoch": epoch,
        "student": student.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "loader_rng": generator.get_state() if generator is not None else None,
        "losses": losses,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill while saving leaves the previous epoch's checkpoint whole


def _resume(path: Path, student, opt, schedule, loader, history: list) -> tuple[int, list[float]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    student.load_state_dict(state["student"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["torch_rng"])
    generator = getattr(loader, "generator", None)
    if generator is not None and state["loader_rng"] is not None:
        generator.set_state(state["loader_rng"])  # the next epoch shuffles as it would have
    history[:] = state["history"]
    info(f"distill: resumed after epoch {state['epoch']} from {path}")
    return state["epoch"], list(state["losses"])
