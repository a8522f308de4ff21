"""distill (optional): knowledge distillation of the pruned student from the dense teacher.

loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels); without
labels (synthetic data) the distillation term alone. Per-epoch accuracy goes to history.csv."""

from __future__ import annotations

import csv

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.core.log import info, progress
from pipeline.data import SYNTHETIC_LABEL, accuracy, eval_loader, train_loader
from pipeline.stages.common import MODEL_WEIGHTS, StageContext, data_spec, dense_model, pruned_model


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                    reduction="batchmean") * temperature**2
    if (labels == SYNTHETIC_LABEL).any():
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def make_optimizer(name: str, params, lr: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    torch.manual_seed(cfg.seed)
    teacher = dense_model(cfg).eval()
    student = pruned_model(cfg, ctx.stage_dir("prune"), ctx.stage_dir("prune"))
    spec = data_spec(cfg)
    loader = train_loader(spec, cfg.distill_samples, cfg.batch_size, cfg.seed, cfg.workers)
    evaluation = eval_loader(spec, cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers)
    optimizer = make_optimizer(cfg.distill_optimizer, student.parameters(), cfg.distill_lr)
    steps = max(1, cfg.distill_epochs * len(loader))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.distill_lr, total_steps=steps, pct_start=0.1)
    history = []
    for epoch in range(1, cfg.distill_epochs + 1):
        student.train()
        total, batches = 0.0, 0
        with progress(len(loader), f"distill {epoch}/{cfg.distill_epochs}", "batch") as bar:
            for inputs, labels in loader:
                with torch.no_grad():
                    teacher_logits = teacher(inputs)
                loss = distillation_loss(student(inputs), teacher_logits, labels, cfg.distill_temperature, cfg.distill_alpha)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, batches = total + loss.item(), batches + 1
                bar.update(1)
        student.eval()
        epoch_accuracy = accuracy(student, evaluation)
        history.append({"epoch": epoch, "loss": total / max(batches, 1), "accuracy": epoch_accuracy})
        shown = f", accuracy {epoch_accuracy:.4f}" if epoch_accuracy is not None else ""
        info(f"distill: epoch {epoch}/{cfg.distill_epochs} loss {total / max(batches, 1):.4f}{shown}")
    with open(ctx.out / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "loss", "accuracy"])
        writer.writeheader()
        writer.writerows(history)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(ctx.out / MODEL_WEIGHTS))
