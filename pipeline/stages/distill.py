"""distill (optional): knowledge distillation of the pruned student from the dense teacher, with the
regulariser the criterion asks for (--regularize class-aware); per-epoch accuracy in history.csv."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import torch

from pipeline.core.device import describe
from pipeline.core.log import info, progress
from pipeline.data.loaders import accuracy
from pipeline.models.build import save_weights
from pipeline.stages.common import StageContext, dense_model, evaluation_batches, pruned_model, training_batches, training_options
from pipeline.training.distillation import finetune, has_convolutions


def run(ctx: StageContext) -> None:
    """Every process under torchrun runs this; only rank 0 evaluates and writes."""
    cfg, device, process = ctx.cfg, ctx.device, ctx.process
    teacher = dense_model(cfg).to(device).eval()
    student = pruned_model(cfg, ctx.run_dir, source="prune").to(device)
    torch.manual_seed(cfg.seed + process.rank)  # each process its own dropout draws
    loader = training_batches(cfg, device, process)
    evaluation = evaluation_batches(cfg, device) if process.is_main else None
    history: list[dict] = []
    options = training_options(cfg, device, channels_last=device.type == "cuda" and has_convolutions(student))
    world = (
        f" on {process.world_size} processes, global batch {cfg.batch_size * process.world_size}" if process.distributed else ""
    )
    info(
        f"distill: {describe(device)}{world}, mixed precision {options.amp}"
        + (", channels_last" if options.channels_last else "")
    )
    bar = progress(cfg.distill_epochs * len(loader), "distill", "batch")

    def on_epoch(epoch: int, loss: float) -> dict:
        epoch_accuracy = accuracy(student, evaluation)
        shown = f", accuracy {epoch_accuracy:.4f}" if epoch_accuracy is not None else ""
        info(f"distill: epoch {epoch}/{cfg.distill_epochs} loss {loss:.4f}{shown}")
        return {"epoch": epoch, "loss": loss, "accuracy": epoch_accuracy}

    checkpoint = checkpoint_path(ctx)
    with bar:
        finetune(student, teacher, loader, options, on_batch=lambda: bar.update(1), on_epoch=on_epoch,
                 checkpoint=checkpoint, history=history)  # fmt: skip
    if not process.is_main:
        return
    with open(ctx.output("history"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "loss", "accuracy"])
        writer.writeheader()
        writer.writerows(history)
    save_weights(student, ctx.output("weights"))
    ctx.record(world_size=process.world_size, global_batch=cfg.batch_size * process.world_size, amp=options.amp)
    shutil.rmtree(checkpoint.parent, ignore_errors=True)  # the stage's outputs replace it


def checkpoint_path(ctx: StageContext) -> Path:
    """Where each finished epoch is kept until the stage completes: beside the stage directories, under
    the stage's input fingerprint, so that only a re-run of the same distillation resumes from it."""
    directory = ctx.run_dir / ".distill-checkpoint"
    for stale in directory.glob("*.pt") if directory.is_dir() and ctx.process.is_main else []:
        if stale.stem != ctx.key[:16]:
            stale.unlink()  # another distillation's (changed flags or upstream)
    return directory / f"{ctx.key[:16]}.pt"
