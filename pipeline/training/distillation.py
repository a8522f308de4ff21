"""Fine-tuning a pruned student: knowledge distillation from the dense teacher, and the training-time
regularisers a criterion may ask for (Class-Aware Pruning's L1 and kernel orthogonality)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    student: nn.Module, teacher: nn.Module, loader, options: TrainingOptions, *, on_batch=None, on_epoch=None
) -> list[float]:
    """Distil `teacher` into `student` for `epochs` (one-cycle schedule); returns each epoch's mean loss."""
    teacher.eval()
    epochs = options.epochs
    opt = make_optimizer(options.optimizer, student.parameters(), options.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=options.lr, total_steps=max(1, epochs * len(loader)), pct_start=0.1
    )
    losses = []
    for epoch in range(1, epochs + 1):
        student.train()
        total, batches = 0.0, 0
        for inputs, labels in loader:
            with torch.no_grad():
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
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses
