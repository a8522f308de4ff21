"""Benchmark (b): ResNet-56 on CIFAR-10 (../shared), every baseline scorer at 2x fewer MACs.

Accuracy on the whole test split: dense; one-shot without and with BatchNorm re-estimation; after
one epoch of knowledge distillation. Writes bench/results/cifar_scorers.json and the README table.
Usage: python bench/cifar_scorers.py [--scorers l1,l2,...] [--distill-epochs 1]"""

from __future__ import annotations

import argparse
import time

from common import ROOT, SHARED, cifar10_root, machine, write_results


def main() -> None:
    from pipeline.core.artifacts import read_json, read_manifest
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--scorers", default="l1,l2,random,bn-scale,taylor")
    parser.add_argument("--distill-epochs", type=int, default=1)
    args = parser.parse_args()
    base = dict(
        model="cifar:resnet56",
        weights=str(SHARED / "models" / "resnet56-cifar10.th"),
        data=str(cifar10_root()),
        macs_reduction=2.0,
        targets=("cpu",),
        calib_samples=1024,
        batch_size=128,
        profile_seconds=0.5,
    )
    rows = []
    for scorer in args.scorers.split(","):
        started = time.time()
        runs = ROOT / "bench" / "runs" / f"resnet56-{scorer}"
        no_bn = run_pipeline(build_config(**base, scorer=scorer, bn_recalibration=False, out=str(runs / "no-bn")), until="prune")
        one_shot = run_pipeline(build_config(**base, scorer=scorer, distill_epochs=args.distill_epochs, out=str(runs / "bn")))
        report = read_json(one_shot / "report.json")
        rows.append(
            {
                "scorer": scorer,
                "macs_ratio": report["macs_ratio"],
                "dense": report["dense"]["accuracy"],
                "one_shot_no_bn": read_json(no_bn / "prune" / "metrics.json")["pruned"]["accuracy_one_shot"],
                "one_shot_bn": report["pruned"]["accuracy_one_shot"],
                "distilled": report["pruned"]["accuracy"],
                "score_seconds": read_manifest(one_shot / "score")["seconds"] + read_manifest(one_shot / "calibrate")["seconds"],
                "distill_seconds": read_manifest(one_shot / "distill")["seconds"] if args.distill_epochs else None,
            }
        )
        print(f"{scorer}: {rows[-1]} ({time.time() - started:.0f} s)", flush=True)
    lines = [
        f"ResNet-56, CIFAR-10 JPEG test split (10,000 images), 2x fewer MACs (uniform ratio per group, "
        f"option-A shortcut channels kept), 1,024 calibration images; {args.distill_epochs} epoch(s) of distillation "
        f"(SGD, lr 0.01, T=4, alpha 0.9, batch 128). Measured on {machine()}.",
        "",
        "| scorer | MACs ratio | dense | one-shot, no BN re-estimation | one-shot, BN re-estimated | after distillation | calibrate+score s | distill s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        distill_s = f"{r['distill_seconds']:.0f}" if r["distill_seconds"] is not None else "-"
        lines.append(
            f"| {r['scorer']} | {r['macs_ratio']:.2f} | {r['dense']:.4f} | {r['one_shot_no_bn']:.4f} | {r['one_shot_bn']:.4f} | "
            f"{r['distilled']:.4f} | {r['score_seconds']:.1f} | {distill_s} |"
        )
    write_results("cifar_scorers", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
