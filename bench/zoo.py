"""Benchmark (d): the model zoo. Every torchvision classification model and a list of timm models
across the families users deploy, random init, `pipeline run --ratio 0.3 --target cpu`, each in
its own process under an address-space cap: ok / refused (the one-line reason) / failed, with ONNX
parity, MACs ratio, speedup, peak resident memory and seconds.

Resumable: every finished model is written to bench/results/zoo.json at once and skipped on the
next start (`--retry failed` re-runs the failures, `--models a,b` picks models). Each run directory
is deleted after its facts are read (ONNX files of the big models take gigabytes).
Usage: python bench/zoo.py [--family torchvision|timm|all] [--models NAME,...] [--timeout S]"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine, write_results

RESULTS = ROOT / "bench" / "results" / "zoo.json"
MEMORY_BUDGET_GB = 8  # a model that needs more is refused at preflight (pipeline run --memory-budget)
RUNS = ROOT / "bench" / "runs" / "zoo"
# what a deployment team starts from, a few of each family, small variants (2 cores run this)
TIMM_MODELS = (
    # ResNet variants
    "resnet18",
    "resnet50d",
    "resnet26t",
    "seresnext26d_32x4d",
    "resnest14d",
    "res2net50_26w_4s",
    "skresnet18",
    "ecaresnet26t",
    # EfficientNet, MobileNet V2/V3/V4, other mobile CNNs
    "efficientnet_b0",
    "efficientnet_lite0",
    "tf_efficientnetv2_b0",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "mobilenetv4_hybrid_medium",
    "mixnet_s",
    "ghostnet_100",
    "lcnet_050",
    "rexnet_100",
    "tinynet_a",
    # ConvNeXt, RegNet, other CNNs
    "convnext_atto",
    "convnextv2_atto",
    "regnetx_002",
    "regnety_004",
    "regnetz_b16",
    "densenet121",
    "dla34",
    "cspresnet50",
    "ese_vovnet19b_dw",
    "hrnet_w18_small",
    "inception_v3",
    "dpn68",
    "nf_resnet26",
    # re-parameterisable nets
    "repvgg_a0",
    "mobileone_s0",
    "repvit_m0_9",
    "fastvit_t8",
    "repghostnet_050",
    # ViT / DeiT
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_distilled_patch16_224",
    "eva02_tiny_patch14_224",
    "cait_xxs24_224",
    # hybrid and efficient transformers, metaformers
    "levit_128s",
    "efficientformer_l1",
    "efficientformerv2_s0",
    "mobilevit_xs",
    "mobilevitv2_050",
    "edgenext_xx_small",
    "poolformer_s12",
    "pvt_v2_b0",
    "tiny_vit_5m_224",
    "efficientvit_b0",
    "swin_tiny_patch4_window7_224",
    "maxvit_nano_rw_256",
    "coat_lite_tiny",
    "xcit_nano_12_p16_224",
    "convit_tiny",
)


def torchvision_models() -> list[str]:
    import torchvision

    return [f"torchvision:{name}" for name in torchvision.models.list_models(module=torchvision.models)]


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save_results(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


def run_one(spec: str, timeout: float, memory_gb: float) -> dict:
    """One `pipeline run` in a child process: its outcome, the report's facts, peak RSS, seconds."""
    out = RUNS / spec.replace(":", "-")
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        "--model",
        spec,
        "--ratio",
        "0.3",
        "--target",
        "cpu",
        "--calib-samples",
        "16",
        "--batch-size",
        "8",
        "--profile-seconds",
        "1",
        "--memory-budget",
        str(MEMORY_BUDGET_GB),
        "--out",
        str(out),
    ]
    cap = int(memory_gb * 2**30)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    started = time.time()
    child = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit_memory
    )
    try:
        output, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
        return {"status": "failed", "reason": f"timeout after {timeout:.0f} s", "seconds": round(time.time() - started)}
    seconds = round(time.time() - started, 1)
    stage_peaks = _stage_peaks(output)
    # the run resets its high-water mark before each stage (the child's ru_maxrss with it): the run's
    # peak is the largest of the stages' and of what the last reset left
    peak_gb = round(max([_child_peak_kb() / 2**20, *stage_peaks.values()]), 2)
    result = {
        "seconds": seconds,
        "peak_rss_gb": peak_gb,
        "stage_peaks_gb": stage_peaks,
        **_outcome(child.returncode, output),
    }
    if result["status"] == "ok":
        result.update(_facts(out))
    shutil.rmtree(out, ignore_errors=True)
    return result


def _child_peak_kb() -> int:
    """ru_maxrss of the children waited for so far; each model runs in a fresh bench process (see main)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def _stage_peaks(output: str) -> dict:
    """Each finished stage's own peak resident memory, from its `[stage] done in ..., peak memory X GB` line."""
    found = re.findall(r"^\[([^\]]+)\] done in [\d.]+ s, peak memory ([\d.]+) GB", output, flags=re.M)
    return {name: float(gb) for name, gb in found}


def _outcome(code: int, output: str) -> dict:
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    if code == 0:
        return {"status": "ok"}
    if code == 2 and errors and "Traceback" not in output:
        return {"status": "refused", "reason": errors[-1].removeprefix("Error: ")[:300]}
    last = next((line for line in reversed(lines) if line.strip()), f"exit {code}")
    if code < 0:
        last = f"killed by signal {-code} (memory cap?)"
    return {"status": "failed", "reason": last[:300], "traceback": "Traceback" in output}


def _facts(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    cpu = report["targets"]["cpu"]
    parity = json.loads((out / "export" / "parity.json").read_text())["pruned"]
    kinds = sorted({layer["kind"] for layer in report["layers"] if layer["kept"] < layer["size"]})
    return {
        "macs_ratio": round(report["macs_ratio"], 3),
        "speedup": round(cpu["speedup"], 3),
        "efficiency": round(cpu["efficiency"], 3),
        "verdict": cpu["verdict"],
        "parity_max_abs": parity["max_abs"],
        "pruned_kinds": kinds,
        "notes": len(report.get("notes", [])),
    }


def table(results: dict) -> str:
    counts: dict[tuple[str, str], int] = {}
    for spec, r in results.items():
        family = spec.split(":")[0]
        counts[(family, r["status"])] = counts.get((family, r["status"]), 0) + 1
    lines = [
        f"Measured on {machine()}; random init, `--ratio 0.3 --target cpu`, 16 synthetic calibration images, "
        f"`--memory-budget {MEMORY_BUDGET_GB}`, each model in its own process under a 20 GiB address-space cap; "
        "peak RSS is the largest of the run's stages'.",
        "",
        "| family | models | ok | refused | failed | over 8 GiB peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for family in sorted({spec.split(":")[0] for spec in results}):
        members = [r for spec, r in results.items() if spec.startswith(family + ":")]
        heavy = sum(1 for r in members if r.get("peak_rss_gb", 0) > 8)
        lines.append(
            f"| {family} | {len(members)} | {counts.get((family, 'ok'), 0)} | {counts.get((family, 'refused'), 0)} | "
            f"{counts.get((family, 'failed'), 0)} | {heavy} |"
        )
    lines += [
        "",
        "| model | status | MACs ratio | speedup | efficiency | parity max abs | pruned | peak RSS GiB | s | reason |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for spec, r in sorted(results.items()):
        facts = (
            f"{r['macs_ratio']:.2f} | {r['speedup']:.2f} | {r['efficiency']:.2f} | {r['parity_max_abs']:.1e} | "
            f"{', '.join(r['pruned_kinds'])}"
            if r["status"] == "ok"
            else " |  |  |  | "
        )
        lines.append(
            f"| {spec} | {r['status']} | {facts} | {r.get('peak_rss_gb', '')} | {r.get('seconds', '')} | "
            f"{r.get('reason', '').replace('|', '/')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", choices=("torchvision", "timm", "all"), default="all")
    parser.add_argument("--models", help="comma-separated specs (torchvision:NAME, timm:NAME); default: the family's list")
    parser.add_argument("--retry", choices=("none", "failed", "all"), default="none")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--memory-gb", type=float, default=20)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model, print its result as JSON
    args = parser.parse_args()
    if args.one:  # a fresh process per model, so that RUSAGE_CHILDREN is that model's peak alone
        print(json.dumps(run_one(args.one, args.timeout, args.memory_gb)))
        return
    if args.models:
        specs = args.models.split(",")
    else:
        specs = (torchvision_models() if args.family in ("torchvision", "all") else []) + (
            [f"timm:{name}" for name in TIMM_MODELS] if args.family in ("timm", "all") else []
        )
    results = load_results()
    for index, spec in enumerate(specs, 1):
        done = results.get(spec)
        if done and not (args.retry == "all" or (args.retry == "failed" and done["status"] == "failed")) and not args.models:
            continue
        print(f"[{index}/{len(specs)}] {spec} ...", flush=True)
        probe = subprocess.run(
            [sys.executable, __file__, "--one", spec, "--timeout", str(args.timeout), "--memory-gb", str(args.memory_gb)],
            capture_output=True,
            text=True,
        )
        try:
            result = json.loads(probe.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            result = {
                "status": "failed",
                "reason": f"benchmark process: {(probe.stderr.strip().splitlines() or ['?'])[-1][:200]}",
            }
        results[spec] = {**result, "commit": _commit()}
        save_results(results)
        print(
            f"    {result['status']} {result.get('reason', '')} ({result.get('seconds', '?')} s, "
            f"{result.get('peak_rss_gb', '?')} GiB)",
            flush=True,
        )
    write_results("zoo", None, table(results))


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
