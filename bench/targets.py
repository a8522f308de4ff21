"""Benchmark (a): realisation efficiency per target for torchvision models pruned at ratio 0.5.

For each model: the whole pipeline (random weights, synthetic calibration, L1), profiled on every
CPU target at batch 1 and 8; efficiency = measured speedup / MACs ratio. Writes bench/results/targets.json
and the README table. Usage: python bench/targets.py [--models resnet18,...] [--seconds 3]"""

from __future__ import annotations

import argparse
import time

from common import ROOT, machine, write_results

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "vit_b_16")


def main() -> None:
    from pipeline.core.artifacts import read_json
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        started = time.time()
        cfg = build_config(
            model=f"torchvision:{name}",
            ratio=0.5,
            targets=("cpu", "openvino"),
            batch_sizes=(1, 8),
            calib_samples=64,
            batch_size=16,
            profile_seconds=args.seconds,
            out=str(ROOT / "bench" / "runs" / name),
        )
        run_dir = run_pipeline(cfg)
        report = read_json(run_dir / "report.json")
        for target, result in report["targets"].items():
            for batch, r in result["by_batch"].items():
                rows.append(
                    {
                        "model": name,
                        "target": target,
                        "batch": int(batch),
                        "macs_ratio": r["macs_ratio"],
                        "dense_ms": r["dense_ms"]["p50"],
                        "pruned_ms": r["pruned_ms"]["p50"],
                        "speedup": r["speedup"],
                        "speedup_ci": r["speedup_ci"],
                        "efficiency": r["efficiency"],
                        "verdict": r["verdict"],
                    }
                )
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    lines = [
        f"Measured on {machine()}; ratio 0.5, L1, channels rounded to the CPU block, fp32, "
        f"dense and pruned interleaved ({args.seconds:g} s each per batch size).",
        "",
        "| model | target | batch | MACs ratio | dense p50 ms | pruned p50 ms | speedup [95% CI] | efficiency | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['target']} | {r['batch']} | {r['macs_ratio']:.2f} | {r['dense_ms']:.2f} | {r['pruned_ms']:.2f} | "
            f"{r['speedup']:.2f} [{r['speedup_ci'][0]:.2f}, {r['speedup_ci'][1]:.2f}] | {r['efficiency']:.2f} | {r['verdict']} |"
        )
    write_results("targets", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
