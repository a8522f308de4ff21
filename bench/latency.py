"""Benchmark: latency-driven against MACs-driven plans, and Torch-Pruning's own L1 pruner, measured on
the CPU targets in one process per case.

For each case (model, batch, target) and each speedup goal: the latency-driven plan (the `latency`
allocator: per-layer tables, knapsack, measured rounds; widths valued by measured sensitivity where the
case has data, as --allocate sensitivity); the MACs-driven plan (one uniform ratio,
searched by measuring until its speedup matches the latency plan's); the peer (Torch-Pruning's
MagnitudePruner, L1, round_to the same block, exported with a plain torch.onnx.export) at the latency
plan's MACs. All plans are then timed again interleaved with the dense model in one run; one-shot
accuracy (BatchNorm re-estimated) where the case has data. Each finished row is saved at once: a run
stopped part-way resumes at the next row. Writes bench/results/latency.json and the README table.

Usage: python bench/latency.py [--cases resnet56-cifar,mobilenet_v2,resnet50] [--targets cpu,openvino]
                               [--speedups 1.5,2,3] [--seconds 2]"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from common import ROOT, SHARED, cifar10_root, machine, write_results

RESULTS = ROOT / "bench" / "results" / "latency.json"
CASES = {
    "resnet56-cifar": {"model": "cifar:resnet56", "weights": str(SHARED / "models" / "resnet56-cifar10.th"),
                       "data": "cifar", "input_shape": (64, 3, 32, 32), "peer": False},  # option-A shortcuts: no peer
    "mobilenet_v2": {"model": "torchvision:mobilenet_v2", "input_shape": (1, 3, 224, 224), "peer": True},
    "resnet50": {"model": "torchvision:resnet50", "input_shape": (8, 3, 224, 224), "peer": True},
}  # fmt: skip
SEARCH_PROBES = 6


def setup(name: str, target: str, seconds: float):
    """The case's resolved config, dense model, groups and L1 scores."""
    from pipeline.core.config import build_config
    from pipeline.preflight import resolve
    from pipeline.pruning.analysis import analyse
    from pipeline.scorers import SCORERS
    from pipeline.stages.common import dense_model, example_input, scoring_context

    case = CASES[name]
    data = str(cifar10_root()) if case.get("data") == "cifar" else None
    cfg = resolve(build_config(model=case["model"], weights=case.get("weights"), data=data, input_shape=case["input_shape"],
                               targets=(target,), calib_samples=1024 if data else 64, eval_samples=None,
                               profile_seconds=seconds, batch_size=64))  # fmt: skip
    model = dense_model(cfg).eval()
    groups = analyse(model, example_input(cfg), ()).groups
    scores = SCORERS.load("l1")().score(scoring_context(cfg, model, groups, {}, lambda: iter(())))
    return cfg, model, groups, scores


def measured_sensitivity(cfg, model, groups, scores, request) -> dict:
    from pipeline.allocators.base import width_options
    from pipeline.stages.common import calibration_batches
    from pipeline.statistics import sensitivity

    widths = {g.name: width_options(g, request) for g in groups if g.name in scores}
    images = [inputs for inputs, _ in calibration_batches(cfg)][: max(1, sensitivity.IMAGES // cfg.batch_size)]
    return sensitivity.curves(model, groups, scores, widths, images)


def one_shot_accuracy(cfg, model, groups, scores, kept) -> float | None:
    from pipeline.allocators.base import lowest
    from pipeline.data.loaders import accuracy
    from pipeline.models.clone import clone_model
    from pipeline.pruning import surgery
    from pipeline.stages.common import calibration_batches, evaluation_batches, example_input

    if cfg.data is None:
        return None
    pruned = clone_model(model)
    removal = {g.name: lowest(scores[g.name], kept[g.name]) for g in groups if g.name in kept}
    surgery.apply_removal(pruned, example_input(cfg), groups, removal)
    surgery.recalibrate_batchnorm(pruned, calibration_batches(cfg))
    return accuracy(pruned, evaluation_batches(cfg))


def macs_ratio_of(model, example) -> float:
    from pipeline.pruning import macs

    return macs.count(model, example)[0]


def macs_plan(budget, groups, round_to: int, goal: float) -> tuple[dict, float]:
    """One uniform ratio, bisected by measuring until the speedup is `goal`'s (the closest probe)."""
    from pipeline.allocators.base import kept_counts

    low, high, best = 0.0, 0.9, None
    for _ in range(SEARCH_PROBES):
        ratio = (low + high) / 2
        kept = kept_counts(groups, ratio, round_to, 0.9)
        dense_ms, pruned_ms = budget.measure(kept)
        speedup = dense_ms / pruned_ms
        if best is None or abs(speedup / goal - 1) < abs(best[1] / goal - 1):
            best = (kept, speedup)
        low, high = (ratio, high) if speedup < goal else (low, ratio)
    return best


def peer_model(model, example, target_macs: float, round_to: int, classifier):
    """Torch-Pruning's MagnitudePruner (L1, uniform), its ratio bisected to `target_macs`."""
    import torch
    import torch_pruning as tp

    low, high, best = 0.0, 0.95, None
    for _ in range(12):
        ratio = (low + high) / 2
        candidate = copy.deepcopy(model)
        pruner = tp.pruner.MagnitudePruner(
            candidate, example[:1], importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
            round_to=round_to, ignored_layers=[candidate.get_submodule(classifier)],
        )  # fmt: skip
        with torch.no_grad():
            pruner.step()
        reached = macs_ratio_of(candidate, example[:1])
        if best is None or abs(reached - target_macs) < abs(best[1] - target_macs):
            best = (candidate, reached)
        low, high = (low, ratio) if reached < target_macs else (ratio, high)
    return best[0]


def plain_export(model, example, path: Path) -> None:
    """The peer's export: torch.onnx.export as its README shows, nothing else."""
    import torch

    with torch.no_grad():
        torch.onnx.export(model.eval(), (example[:1],), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})  # fmt: skip


def run_row(name: str, target: str, goal: float, seconds: float, workdir: Path) -> dict:
    import torch

    from exporters.base import default_threads
    from pipeline.allocators import latency as latency_allocator
    from pipeline.allocators.base import Request, lowest
    from pipeline.latency.candidates import LatencyBudget, Setting
    from pipeline.models.clone import clone_model
    from pipeline.pruning import macs, surgery
    from pipeline.stages.common import example_input
    from pipeline.stages.prune import channel_block
    from profiles import measure

    cfg, model, groups, scores = setup(name, target, seconds)
    round_to = channel_block(cfg.targets, cfg.precision)
    threads = default_threads()
    started = time.time()
    setting = Setting(target, "fp32", tuple(cfg.input_shape), threads, seconds, 10, round_to, 0.9)
    budget = LatencyBudget(setting, model, groups, scores, workdir, speedup=goal)
    table_seconds = time.time() - started
    estimator = macs.MacsEstimator(model, example_input(cfg), groups)
    request = Request(groups, scores, estimator, round_to, False, 0.9, "uniform", latency=budget)
    if cfg.data is not None:  # with data, widths valued by measured sensitivity (--allocate sensitivity)
        request.sensitivity = measured_sensitivity(cfg, model, groups, scores, request)
    allocation = latency_allocator.allocate(request)
    chosen = next(r for r in allocation.details["rounds"] if r["chosen"])
    kept_latency = allocation.kept
    kept_macs, _ = macs_plan(budget, groups, round_to, chosen["measured_speedup"])
    plans = {"latency": kept_latency, "macs": kept_macs}
    example = example_input(cfg)
    networks = {}
    for plan_name, kept in plans.items():
        network = clone_model(budget.network)
        removal = {g.name: lowest(scores[g.name], kept[g.name]) for g in groups if g.name in kept}
        surgery.apply_removal(network, example, groups, removal)
        networks[plan_name] = network
    compiled = {"dense": budget.dense_dir}
    for plan_name, network in networks.items():
        compiled[plan_name] = budget.compile(network, f"final-{plan_name}")
    dense_macs = macs_ratio_of(model, example)
    if CASES[name]["peer"]:
        ours = dense_macs / macs_ratio_of(networks["latency"], example)
        classifier = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
        peer = peer_model(model, example, dense_macs / ours, round_to, classifier)
        networks["peer"] = peer
        folder = workdir / "peer"
        folder.mkdir(parents=True, exist_ok=True)
        plain_export(peer, example, folder / "model.onnx")
        (folder / target).mkdir(exist_ok=True)
        budget.target.compile(folder / "model.onnx", folder / target, "fp32", (cfg.input_shape[0],))
        compiled["peer"] = folder / target
    times = budget.time(compiled)
    dense_ms = measure.median_ms(times["dense"])
    row = {"case": name, "target": target, "batch": cfg.input_shape[0], "goal": goal, "table_seconds": table_seconds,
           "rounds": allocation.details["rounds"], "dense_ms": dense_ms}  # fmt: skip
    for plan_name, network in networks.items():
        kept = plans.get(plan_name)
        row[plan_name] = {
            "macs_ratio": dense_macs / macs_ratio_of(network, example),
            "ms": measure.median_ms(times[plan_name]),
            "speedup": dense_ms / measure.median_ms(times[plan_name]),
            "accuracy": one_shot_accuracy(cfg, model, groups, scores, kept) if kept is not None else None,
        }
    return row


def table(rows: list[dict], seconds: float) -> str:
    def fmt(part: dict | None, key: str, spec: str) -> str:
        return "-" if not part or part.get(key) is None else format(part[key], spec)

    lines = [
        f"Measured on {machine()}; L1 scores, fp32, channels rounded to the CPU block; all plans of a row timed again "
        f"interleaved with the dense model in one run ({seconds:g} s each). MACs-driven: one uniform ratio searched "
        "by measurement to the latency plan's speedup; peer: Torch-Pruning's MagnitudePruner at the latency plan's MACs.",
        "",
        "| case | target | batch | goal | latency plan: MACs / speedup / acc. | MACs plan: MACs / speedup / acc. | "
        "peer: MACs / speedup | table s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            "-"
            if not r.get(p)
            else f"{fmt(r[p], 'macs_ratio', '.2f')}x / {fmt(r[p], 'speedup', '.2f')}x"
            + (f" / {fmt(r[p], 'accuracy', '.4f')}" if p != "peer" else "")
            for p in ("latency", "macs", "peer")
        ]
        lines.append(
            f"| {r['case']} | {r['target']} | {r['batch']} | {r['goal']:g}x | {' | '.join(cells)} | {r['table_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--targets", default="cpu,openvino")
    parser.add_argument("--speedups", default="1.5,2,3")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    done = {(r["case"], r["target"], r["goal"]) for r in rows}
    for name in args.cases.split(","):
        targets = ("cpu",) if name == "resnet56-cifar" else args.targets.split(",")
        for target in targets:
            for goal in map(float, args.speedups.split(",")):
                if (name, target, goal) in done:
                    continue
                started = time.time()
                row = run_row(name, target, goal, args.seconds, ROOT / "bench" / "runs" / "latency" / f"{name}-{target}-{goal:g}")
                rows.append(row)
                RESULTS.parent.mkdir(exist_ok=True)
                RESULTS.write_text(json.dumps(rows, indent=2) + "\n")  # resumable: each row as it finishes
                print(f"{name} {target} {goal:g}x: {time.time() - started:.0f} s", flush=True)
    write_results("latency", None, table(rows, args.seconds))


if __name__ == "__main__":
    main()
