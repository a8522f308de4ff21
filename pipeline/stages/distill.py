"""distill (optional): knowledge distillation of the pruned student from the dense teacher, with the
regulariser the criterion asks for (--regularize class-aware); per-epoch accuracy in history.csv."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import torch

from pipeline.core.log import info, progress
from pipeline.data.loaders import accuracy, eval_loader, train_loader
from pipeline.models.build import save_weights
from pipeline.stages.common import StageContext, data_spec, dense_model, pruned_model, training_options
from pipeline.training.distillation import finetune


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    torch.manual_seed(cfg.seed)
    teacher = dense_model(cfg).eval()
    student = pruned_model(cfg, ctx.run_dir, source="prune")
    spec = data_spec(cfg)
    loader = train_loader(spec, cfg.train_samples, cfg.batch_size, cfg.seed, cfg.workers)
    evaluation = eval_loader(spec, cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers)
    history: list[dict] = []
    bar = progress(cfg.distill_epochs * len(loader), "distill", "batch")

    def on_epoch(epoch: int, loss: float) -> dict:
        epoch_accuracy = accuracy(student, evaluation)
        shown = f", accuracy {epoch_accuracy:.4f}" if epoch_accuracy is not None else ""
        info(f"distill: epoch {epoch}/{cfg.distill_epochs} loss {loss:.4f}{shown}")
        return {"epoch": epoch, "loss": loss, "accuracy": epoch_accuracy}

    checkpoint = checkpoint_path(ctx)
    with bar:
        options = training_options(cfg)
        finetune(
            student,
            teacher,
            loader,
            options,
            on_batch=lambda: bar.update(1),
            on_epoch=on_epoch,
            checkpoint=checkpoint,
            history=history,
        )
    with open(ctx.output("history"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "loss", "accuracy"])
        writer.writeheader()
        writer.writerows(history)
    save_weights(student, ctx.output("weights"))
    shutil.rmtree(checkpoint.parent, ignore_errors=True)  # the stage's outputs replace it


def checkpoint_path(ctx: StageContext) -> Path:
    """Where each finished epoch is kept until the stage completes: beside the stage directories, under
    the stage's input fingerprint, so that only a re-run of the same distillation resumes from it."""
    directory = ctx.run_dir / ".distill-checkpoint"
    for stale in directory.glob("*.pt") if directory.is_dir() else []:
        if stale.stem != ctx.key[:16]:
            stale.unlink()  # another distillation's (changed flags or upstream)
    return directory / f"{ctx.key[:16]}.pt"
