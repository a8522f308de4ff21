"""distill (optional): knowledge distillation of the pruned student from the dense teacher, with the
regulariser the criterion asks for (--regularize class-aware); per-epoch accuracy in history.csv."""

from __future__ import annotations

import csv

import torch
from safetensors.torch import save_file

from pipeline.core.log import info, progress
from pipeline.data.loaders import accuracy, eval_loader, train_loader
from pipeline.stages.common import StageContext, data_spec, dense_model, pruned_model, training_options
from pipeline.training.distillation import finetune


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    torch.manual_seed(cfg.seed)
    teacher = dense_model(cfg).eval()
    student = pruned_model(cfg, ctx.run_dir, source="prune")
    spec = data_spec(cfg)
    loader = train_loader(spec, cfg.distill_samples, cfg.batch_size, cfg.seed, cfg.workers)
    evaluation = eval_loader(spec, cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers)
    history = []
    bar = progress(cfg.distill_epochs * len(loader), "distill", "batch")

    def on_epoch(epoch: int, loss: float) -> None:
        epoch_accuracy = accuracy(student, evaluation)
        history.append({"epoch": epoch, "loss": loss, "accuracy": epoch_accuracy})
        shown = f", accuracy {epoch_accuracy:.4f}" if epoch_accuracy is not None else ""
        info(f"distill: epoch {epoch}/{cfg.distill_epochs} loss {loss:.4f}{shown}")

    with bar:
        finetune(student, teacher, loader, training_options(cfg), on_batch=lambda: bar.update(1), on_epoch=on_epoch)
    with open(ctx.output("history"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "loss", "accuracy"])
        writer.writeheader()
        writer.writerows(history)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(ctx.output("weights")))
