"""Benchmark: images per second of distillation (dense teacher -> student pruned at ratio 0.5 by L1),
for ResNet-56 (CIFAR size, 32x32) and ResNet-50 (224x224), on synthetic images and labels, through
the pipeline's own training loop (pipeline.training.distillation.finetune). Each setting trains two
epochs and times the second (the first warms up allocators, cuDNN and the data loader):
- the CPU with 1 process, and with 2 processes under torchrun (gloo, one thread each);
- every CUDA GPU present: 1 process, and all GPUs under torchrun (NCCL), with the defaults a GPU run
  takes (bf16 autocast where supported, channels_last).
Writes bench/results/distill.json and the README table; a setting already measured on the same
machine is kept (the script resumes). Usage: python bench/distill.py [--models resnet56,resnet50]
[--batches 8] [--retry]"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, machine, write_results

MODELS = {  # spec, image shape, per-process batch
    "resnet56": ("cifar:resnet56", (3, 32, 32), 64),
    "resnet50": ("torchvision:resnet50", (3, 224, 224), 16),
}
RESULTS = ROOT / "bench" / "results" / "distill.json"


def prepare(name: str):
    """A run directory pruned up to the prune stage (random weights; the student's shape is what matters)."""
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    spec, shape, _ = MODELS[name]
    cfg = build_config(
        model=spec, ratio=0.5, input_shape=(1, *shape), calib_samples=16, batch_size=8, device="cpu",
        out=str(ROOT / "bench" / "runs" / f"distill-{name}"),
    )  # fmt: skip
    return run_pipeline(cfg, until="prune")


def worker(name: str, device_name: str, batches: int, out: str) -> None:
    """One process of a setting (or every process under torchrun): two epochs, the second timed on rank 0."""
    import torch
    from torch.utils.data import TensorDataset

    from pipeline.core import distributed
    from pipeline.core.device import describe, resolve_device
    from pipeline.data.loaders import shuffled_loader
    from pipeline.runner import load_run_config
    from pipeline.stages.common import dense_model, pruned_model, training_options
    from pipeline.training.distillation import has_convolutions

    run_dir = ROOT / "bench" / "runs" / f"distill-{name}"
    launched = distributed.launched()
    device = resolve_device(device_name, launched.local_rank if launched else None)
    with distributed.session(device) as process:
        cfg = load_run_config(run_dir).replace(distill_epochs=2, amp="auto")
        teacher = dense_model(cfg).to(device).eval()
        student = pruned_model(cfg, run_dir, source="prune").to(device)
        _, shape, batch = MODELS[name]
        count = batches * batch * process.world_size
        generator = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(count, *shape, generator=generator), torch.randint(0, 10, (count,), generator=generator))
        loader = shuffled_loader(data, batch, seed=0, device=device, rank=process.rank, world_size=process.world_size)
        options = training_options(cfg, device, channels_last=device.type == "cuda" and has_convolutions(student))
        stamps = []

        def on_epoch(epoch, loss):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

        from pipeline.training.distillation import finetune

        finetune(student, teacher, loader, options, on_epoch=on_epoch)
        if process.is_main:
            row = {
                "model": name, "device": describe(device), "processes": process.world_size, "per_process_batch": batch,
                "global_batch": batch * process.world_size, "amp": options.amp, "channels_last": options.channels_last,
                "threads": torch.get_num_threads(), "images_per_s": count / (stamps[1] - stamps[0]),
            }  # fmt: skip
            with open(out, "w") as handle:
                json.dump(row, handle)


def settings() -> list[tuple[str, int]]:
    """(device, processes) to measure here."""
    import torch

    found = [("cpu", 1), ("cpu", 2)]
    if torch.cuda.is_available():
        found.append(("cuda", 1))
        if torch.cuda.device_count() > 1:
            found.append(("cuda", torch.cuda.device_count()))
    return found


def measure(name: str, device: str, processes: int, batches: int) -> dict:
    out = ROOT / "bench" / "runs" / f"distill-{name}-{device}-{processes}.json"
    out.unlink(missing_ok=True)
    script = [
        str(ROOT / "bench" / "distill.py"),
        "--worker",
        name,
        "--device",
        device,
        "--batches",
        str(batches),
        "--out",
        str(out),
    ]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + script
    env = dict(os.environ, OMP_NUM_THREADS="1") if processes > 1 and device == "cpu" else None
    subprocess.run(command, cwd=ROOT, check=True, env=env)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", type=int, default=8, help="batches per process and epoch")
    parser.add_argument("--retry", action="store_true", help="measure again what was measured on this machine")
    parser.add_argument("--worker")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.device, args.batches, args.out)
    here = machine()
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    for name in args.models.split(","):
        prepare(name)
        for device, processes in settings():
            done = [r for r in rows if (r["model"], r["setting"], r["machine"]) == (name, f"{device}x{processes}", here)]
            if done and not args.retry:
                continue
            started = time.time()
            row = {**measure(name, device, processes, args.batches), "setting": f"{device}x{processes}", "machine": here,
                   "measured": time.strftime("%Y-%m-%d")}  # fmt: skip
            rows = [r for r in rows if r not in done] + [row]
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
            print(f"{name} {device} x{processes}: {row['images_per_s']:.1f} img/s ({time.time() - started:.0f} s)", flush=True)
    write_results("distill", None, table(rows))


def table(rows: list[dict]) -> str:
    lines = [
        "Distillation throughput (teacher forward + student forward and backward), student pruned at ratio 0.5 by L1, "
        "synthetic images; the second of two epochs timed. Per process the batch is the per-process batch; under torchrun "
        "the global batch is that times the processes.",
        "",
        "| model | device | processes | global batch | mixed precision | channels_last | images/s | machine | measured |",
        "|---|---|---:|---:|---|---|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["machine"], r["setting"])):
        lines.append(
            f"| {r['model']} | {r['device']} | {r['processes']} | {r['global_batch']} | {r['amp']} | "
            f"{'yes' if r['channels_last'] else 'no'} | {r['images_per_s']:.1f} | {r['machine']} | {r['measured']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
