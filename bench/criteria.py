"""Every scorer on the pretrained CIFAR-10 ResNets of ../shared at 2x and 3x fewer MACs, and CoSeP and
C-SWAP also at the budget they choose themselves ("own"). One-shot accuracy (BatchNorm re-estimated)
with no compensation, with mean-shift compensation and with the least-squares re-fit, alone, with
reconstruction selection, sensitivity allocation or both (also at the MACs the plain re-fit reached, so
that the two compare at equal MACs); after 1 epoch
of distillation (the scorer's own compensation); the time calibration + scoring took. Also ViT-B/16
(random weights) with VBP at 50% of the MLP neurons: MACs ratio and measured speedup on cpu and
openvino.

Rows are cached in bench/results/criteria.json, so an interrupted run resumes where it stopped; the
README table is rewritten after every row. The budgets of one scorer and compensation share a run
directory, so they share its calibration and scores. Usage:
  python bench/criteria.py [--models resnet56,resnet20] [--budgets own,2,3] [--scorers l1,vbp,...]
                           [--variants none,mean,lstsq,reconstruction,sensitivity,both,matched] [--no-distill] [--vit]"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from common import ROOT, SHARED, cifar10_root, machine, write_results

from pipeline.core.errors import ConfigError

# "name@ranking": the criterion's scores spread by that ranking instead of its own per-layer counts
SCORERS = (
    "random",
    "l1",
    "l2",
    "bn-scale",
    "taylor",
    "vbp",
    "snip",
    "class-aware",
    "cosep",
    "cosep@uniform",
    "cswap",
    "cswap@uniform",
)
OWN_BUDGET = ("cosep", "cswap")  # criteria that choose each layer's count
VARIANTS = ("none", "mean", "lstsq", "reconstruction", "sensitivity", "both", "matched")
# the last four re-fit too: --select reconstruction, --allocate sensitivity, both at once, and both at the
# MACs the plain re-fit's uniform search reached ("matched", where the two differ by more than MATCH)
OPTIONS = {"reconstruction": {"select": "reconstruction"}, "sensitivity": {"allocate": "sensitivity"},
           "both": {"select": "reconstruction", "allocate": "sensitivity"}}  # fmt: skip
OPTIONS["matched"] = OPTIONS["both"]  # the same options, asked for another MACs reduction
REFITTED = ("lstsq", "reconstruction", "sensitivity", "both", "matched")
MATCH = 0.01
# cells of an older re-fit (2: consumers only; 3: every later layer, then also residual joins; 4: the
# selection re-fits every layer before each group's consumers, as the re-fit will; 5: layers that feed
# a ReLU fitted to what passes it) are kept aside, shown in parentheses until measured again
REFIT_VERSION = {"lstsq": 5, "sensitivity": 5, "reconstruction": 5, "both": 5, "matched": 5}
# C-SWAP intervenes per compensation: one scoring (minutes) per run directory, so no mean-shift column
ONLY = {"cswap": ("none", *REFITTED), "cswap@uniform": ("none",)}
CACHE = ROOT / "bench" / "results" / "criteria.json"


def one_shot(model: str, scorer: str, budget: float | None, compensate: str, distill: int) -> dict:
    from pipeline.core.artifacts import read_json, read_manifest
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    scorer, _, ranking = scorer.partition("@")
    options = OPTIONS.get(compensate, {})
    compensate = "lstsq" if options else compensate
    # the scores do not depend on the ranking: one run directory per scorer and compensation shares them
    out = ROOT / "bench" / "runs" / "criteria" / f"{model}-{scorer}-{compensate}"
    cfg = build_config(
        model=f"cifar:{model}",
        weights=str(SHARED / "models" / f"{model}-cifar10.th"),
        data=str(cifar10_root()),
        scorer=scorer,
        ranking=ranking or None,
        macs_reduction=budget,
        round_to=8,  # the table's block on every machine (the cpu target's default follows the vector width)
        compensate=compensate,
        targets=("cpu",),
        calib_samples=1024,
        batch_size=128,
        distill_epochs=distill,
        out=str(out),
        **options,
    )
    # the stages cache by configuration, not code: a cell is measured afresh (calibration and scores kept)
    shutil.rmtree(out / "prune", ignore_errors=True)
    run_dir = run_pipeline(cfg, until="distill" if distill else "prune")
    metrics = read_json(run_dir / "prune" / "metrics.json")
    row = {
        "accuracy": metrics["pruned"]["accuracy_one_shot"],
        "macs_ratio": metrics["macs_ratio"],
        "dense": read_json(run_dir / "calibrate" / "accuracy.json")["dense"],
        "score_seconds": read_manifest(run_dir / "calibrate")["seconds"] + read_manifest(run_dir / "score")["seconds"],
        "prune_seconds": read_manifest(run_dir / "prune")["seconds"],
        "ranking": read_json(run_dir / "prune" / "plan.json")["ranking"],
    }
    if distill:
        history = (run_dir / "distill" / "history.csv").read_text().strip().splitlines()
        row["distilled"] = float(history[-1].split(",")[-1])
    return row


def matched_budget(row: dict) -> float | None:
    """The MACs reduction the plain re-fit's uniform search reached, where the sensitivity widths of
    "both" reached another (it plans to the target, the uniform search stops at the closest ratio)."""
    if "lstsq" not in row or "both" not in row:
        return None
    reached = row["lstsq"]["macs_ratio"]
    return reached if abs(row["both"]["macs_ratio"] / reached - 1.0) > MATCH else None


def vit_row() -> dict:
    from pipeline.core.artifacts import read_json
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    cfg = build_config(
        model="torchvision:vit_b_16",
        scorer="vbp",
        ratio=0.5,
        targets=("cpu", "openvino"),
        calib_samples=64,
        batch_size=16,
        profile_seconds=3.0,
        out=str(ROOT / "bench" / "runs" / "criteria" / "vit_b_16-vbp"),
    )
    report = read_json(run_pipeline(cfg) / "report.json")
    return {
        "macs_ratio": report["macs_ratio"],
        "targets": {
            t: {k: r[k] for k in ("speedup", "speedup_ci", "efficiency", "verdict")} for t, r in report["targets"].items()
        },
        "dense_ms": {t: r["dense_ms"]["p50"] for t, r in report["targets"].items()},
        "pruned_ms": {t: r["pruned_ms"]["p50"] for t, r in report["targets"].items()},
    }


def table(cache: dict) -> str:
    lines = [
        f"Pretrained CIFAR-10 ResNets of ../shared, CIFAR-10 JPEG test split (10,000 images), 1,024 class-stratified "
        f"calibration images, BatchNorm re-estimated after removal, kept widths rounded to 8. Columns: one-shot accuracy "
        f"with no compensation / mean-shift / least-squares re-fit / the re-fit with --select reconstruction, with --allocate "
        f"sensitivity, with both, and with both at the MACs reduction the plain re-fit's uniform search reached (where "
        f"the sensitivity widths, planned to the target itself, reached one more than {MATCH:.0%} away: the same MACs "
        f"compared; a MACs reduction in parentheses is the one that cell reached); after 1 epoch of distillation (SGD lr "
        f"0.01, T 4, alpha 0.9) "
        f"with the scorer's own compensation; seconds of calibration + scoring. MACs 'own': the per-layer counts CoSeP "
        f"or C-SWAP chose; ranking 'own, scaled': those counts scaled by one factor to the target; 'name@uniform': the "
        f"criterion's scores spread uniformly instead. Measured on {machine()}. '-' = not measured: mean-shift beyond "
        f"2x (it equals no compensation wherever BatchNorm is re-estimated, as every 2x row shows), C-SWAP with "
        f"other compensations (each is a new scoring of minutes), distillation cells still to run "
        f"(`make bench-criteria` resumes). Scoring does not depend on the budget: its seconds are shown once per "
        f"scorer; C-SWAP's were taken while other jobs shared the 2 cores (alone: 'Measured here'). A re-fit cell in parentheses was measured "
        f"with an older re-fit (the consumers alone, or before the layers feeding a residual join made up for the other "
        f"branch's error, or a selection that did not re-fit the layers before each group's consumers), being measured "
        f"again. prune s: the prune "
        f"stage with both options (sensitivity curves, selection, re-fit, evaluation).",
        "",
        "| model | MACs | scorer | ranking | one-shot | + mean-shift | + lstsq re-fit | re-fit + reconstruction "
        "| re-fit + sensitivity | re-fit + both | both at the re-fit's MACs | 1 epoch KD | calib+score s | prune s (both) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def order(key):
        _, model, budget, scorer = key.split("/")
        return (
            model,
            0.0 if budget == "own" else float(budget),
            SCORERS.index(scorer) if scorer in SCORERS else len(SCORERS),
            scorer,
        )

    for key in sorted((k for k in cache if k.startswith("cifar/")), key=order):
        _, model, budget, scorer = key.split("/")
        r = cache[key]
        older = r.get("older", {})

        def cell(v, r=r, older=older):
            if v in r:
                reached = f" ({r[v]['macs_ratio']:.2f}x)" if v in ("both", "matched", "sensitivity") and "lstsq" in r else ""
                return f"{r[v]['accuracy']:.4f}{reached}"
            return f"({older[v]['accuracy']:.4f})" if v in older else "-"

        distilled = next((r[v]["distilled"] for v in VARIANTS if v in r and "distilled" in r[v]), None)
        seconds = next((r[v]["score_seconds"] for v in VARIANTS if v in r), None)
        ranking = next((r[v]["ranking"] for v in VARIANTS if v in r and "ranking" in r[v]), "-")
        reached = next(c[v]["macs_ratio"] for c in (r, r.get("older", {})) for v in VARIANTS if v in c)
        prune_seconds = f"{r['both']['prune_seconds']:.0f}" if "both" in r else "-"
        lines.append(
            f"| {model} | {'own' if budget == 'own' else f'{float(budget):g}x'} ({reached:.2f}) | {scorer} | {ranking} | "
            f"{cell('none')} | {cell('mean')} | {cell('lstsq')} | {cell('reconstruction')} | {cell('sensitivity')} | "
            f"{cell('both')} | {cell('matched')} | {f'{distilled:.4f}' if distilled else '-'} | "
            f"{f'{seconds:.0f}' if seconds and budget in ('own', '2') else ''} | "
            f"{prune_seconds} |"
        )
    if "vit" in cache:
        v = cache["vit"]
        lines += [
            "",
            f"ViT-B/16 (random weights), VBP removing 50% of the MLP hidden neurons (global ranking, mean-shift): "
            f"MACs ratio {v['macs_ratio']:.2f}.",
            "",
            "| target | dense p50 ms | pruned p50 ms | speedup [95% CI] | efficiency | verdict |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for t, r in v["targets"].items():
            lines.append(
                f"| {t} | {v['dense_ms'][t]:.1f} | {v['pruned_ms'][t]:.1f} | {r['speedup']:.2f} [{r['speedup_ci'][0]:.2f}, "
                f"{r['speedup_ci'][1]:.2f}] | {r['efficiency']:.2f} | {r['verdict']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet56,resnet20")
    parser.add_argument("--budgets", default="own,2,3")
    parser.add_argument("--scorers", default=",".join(SCORERS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--no-distill", action="store_true")
    parser.add_argument("--vit", action="store_true", help="also the ViT-B/16 VBP speed row")
    args = parser.parse_args()
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    for key, row in cache.items():
        if not key.startswith("cifar/"):
            continue
        if "lstsq_consumers" in row:
            row.setdefault("older", {}).setdefault("lstsq", row.pop("lstsq_consumers"))
        for variant in REFITTED:
            if variant in row and row[variant].get("refit_version") != REFIT_VERSION[variant]:
                row.setdefault("older", {})[variant] = row.pop(variant)
    for model in args.models.split(","):
        for budget in args.budgets.split(","):
            for scorer in args.scorers.split(","):
                if budget == "own" and scorer not in OWN_BUDGET:
                    continue
                key = f"cifar/{model}/{budget if budget == 'own' else f'{float(budget):g}'}/{scorer}"
                row = cache.setdefault(key, {})
                own = "mean" if scorer == "vbp" else "none"
                for variant in args.variants.split(","):
                    if variant not in ONLY.get(scorer, VARIANTS):
                        continue
                    distill = 0 if args.no_distill or variant != own else 1
                    if variant in row and (not distill or "distilled" in row[variant]):
                        continue
                    goal = None if budget == "own" else float(budget)
                    if variant == "matched":
                        goal = matched_budget(row)
                        if goal is None:
                            continue
                    started = time.time()
                    try:
                        row[variant] = one_shot(model, scorer, goal, variant, distill)
                    except ConfigError as error:  # a budget this criterion's counts cannot reach on the block
                        print(f"{key} {variant}: not measured: {error}", flush=True)
                        continue
                    row[variant]["refit_version"] = REFIT_VERSION[variant]
                    print(f"{key} {variant}: {row[variant]} ({time.time() - started:.0f} s)", flush=True)
                    CACHE.parent.mkdir(exist_ok=True)
                    CACHE.write_text(json.dumps(cache, indent=1) + "\n")
                    write_results("criteria", None, table(cache))
    if args.vit and "vit" not in cache:
        cache["vit"] = vit_row()
        CACHE.write_text(json.dumps(cache, indent=1) + "\n")
    write_results("criteria", None, table(cache))


if __name__ == "__main__":
    main()
