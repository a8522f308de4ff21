"""Benchmark: how a latency knapsack's plans depend on what a plan is worth, without timing a plan.

For each case, target and batch: the latency tables (from the cache, or built), the dense model profiled
per layer PROFILES times, and for each profile, and for NOISY more with every layer's profiled time moved
by a random factor (NOISE, log-normal), the knapsack's plan at each predicted speedup goal under two
worths: the MACs the kept units carry, score-weighted (pipeline.allocators.worth.CarriedMacs, what the
latency allocator uses), and the same scores summed per group, each unit weighted by the MACs depending
on it in the dense network. Reported: the MACs reduction of the plans (least, most); at the same
predicted latency, fewer MACs removed is better, and a narrow range is a plan that does not hinge on one
profile. Each finished row is saved at once (a stopped run resumes). Writes bench/results/plan_worth.json
and the README table.

Usage: python bench/plan_worth.py [--rows resnet50:openvino:8,...] [--speedups 1.5,2,3]"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
from pathlib import Path

from common import ROOT, machine, write_results
from latency import CASES

RESULTS = ROOT / "bench" / "results" / "plan_worth.json"
ROWS = "resnet50:openvino:8,resnet50:cpu:8,resnet50:openvino:1,mobilenet_v2:openvino:1,mobilenet_v2:cpu:8"
PROFILES = 3
NOISY = 5
NOISE = 0.1  # standard deviation of the log of each layer's factor


def summed_per_group(estimator, scores, widths):
    """Scores divided by their group's mean, summed over the kept units, each group weighted by the MACs
    that depend on one of its units in the dense network (relative to the mean over the groups)."""
    from pipeline.allocators.latency import kept_values
    from pipeline.allocators.worth import Additive

    sizes = estimator.sizes
    per_unit = {name: max(estimator.dense - estimator.estimate({name: sizes[name] - 1}), 1) for name in widths}
    mean = sum(per_unit.values()) / len(per_unit)
    return Additive(
        {name: {w: v * per_unit[name] / mean for w, v in kept_values(scores[name], "uniform").items()} for name in widths}
    )


def case_models(case: str, target: str, batch: int, workdir: Path):
    """The case's groups, scores and MACs estimator, and its latency model under each dense profile."""
    from latency import setup

    from exporters.base import default_threads
    from pipeline.latency.candidates import LatencyBudget, Setting
    from pipeline.latency.predict import LatencyModel
    from pipeline.pruning import macs
    from pipeline.stages.common import example_input
    from pipeline.stages.prune import channel_block

    cfg, model, groups, scores = setup(case, target, batch, 2.0)
    round_to = channel_block(cfg.targets, cfg.precision)
    setting = Setting(target, "fp32", tuple(cfg.input_shape), default_threads(), 2.0, 10, round_to, 0.9)
    budget = LatencyBudget(setting, model, groups, scores, workdir, speedup=2.0)  # the goal is not used here
    first = budget.model
    models = [first] + [
        LatencyModel(first.layers, first.table, first.dense_ms, first.sizes, budget.network_times()) for _ in range(PROFILES - 1)
    ]
    return groups, scores, macs.MacsEstimator(model, example_input(cfg), groups), round_to, models


def noisy(model, rng: random.Random):
    moved = copy.copy(model)
    moved.weight = {name: ms * math.exp(rng.gauss(0.0, NOISE)) for name, ms in model.weight.items()}
    return moved


def run_row(case: str, target: str, batch: int, goals: list[float], workdir: Path) -> dict:
    from pipeline.allocators.base import Request, width_options
    from pipeline.allocators.knapsack import fastest, plan
    from pipeline.allocators.worth import CarriedMacs

    groups, scores, estimator, round_to, models = case_models(case, target, batch, workdir)
    request = Request(groups, scores, estimator, round_to, False, 0.9)
    widths = {g.name: width_options(g, request) for g in groups if g.name in scores}
    worths = {
        "carried": CarriedMacs(estimator, {name: scores[name] for name in widths}),
        "summed": summed_per_group(estimator, scores, widths),
    }
    rng = random.Random(0)
    profiles = {"profiled": models, "noisy": [noisy(models[i % len(models)], rng) for i in range(NOISY)]}
    reductions = {}
    for goal in goals:
        for kind, predictors in profiles.items():
            for worth_name, worth in worths.items():
                found = []
                for latency_model in predictors:
                    kept = plan(latency_model, widths, worth, latency_model.dense_ms / goal, fastest(latency_model, widths))
                    found.append(estimator.dense / estimator.estimate(kept))
                reductions[f"{goal:g}/{kind}/{worth_name}"] = found
    return {"case": case, "target": target, "batch": batch, "machine": machine(), "macs_reductions": reductions}


def table(rows: list[dict]) -> str:
    lines = [
        f"| model | target | batch | goal | {PROFILES} profiles: carried MACs | summed per group "
        f"| {NOISY} noisy profiles: carried MACs | summed per group |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        goals = sorted({key.split("/")[0] for key in row["macs_reductions"]}, key=float)
        for goal in goals:
            cells = []
            for kind in ("profiled", "noisy"):
                for worth in ("carried", "summed"):
                    found = row["macs_reductions"][f"{goal}/{kind}/{worth}"]
                    cells.append(f"{min(found):.2f}x to {max(found):.2f}x")
            lines.append(f"| {row['case']} | {row['target']} | {row['batch']} | {goal}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default=ROWS, help="case:target:batch, comma-separated")
    parser.add_argument("--speedups", default="1.5,2,3")
    args = parser.parse_args()
    goals = [float(g) for g in args.speedups.split(",")]
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    done = {(r["case"], r["target"], r["batch"]) for r in rows}
    for spec in args.rows.split(","):
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] not in CASES or not parts[2].isdigit():
            sys.exit(f"--rows: {spec!r} is not case:target:batch with a case of {', '.join(CASES)}")
        case, target, batch = parts
        if (case, target, int(batch)) in done:
            continue
        workdir = ROOT / "bench" / "runs" / "plan_worth" / f"{case}-{target}-b{batch}"
        rows.append(run_row(case, target, int(batch), goals, workdir))
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"{spec} done", flush=True)
    write_results("plan_worth", None, table(rows))


if __name__ == "__main__":
    main()
