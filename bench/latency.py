"""Benchmark: latency-driven against MACs-driven plans, and Torch-Pruning's own L1 pruner, measured on
the CPU targets in one process per row.

For each case (model), batch, target and speedup goal: the latency-driven plan (the `latency`
allocator: per-layer tables, knapsack, measured rounds; widths valued by measured sensitivity where the
case has data, and plans searched from the uniform plan by measuring them whole, as --allocate sensitivity
does); the MACs-driven plan (one uniform ratio, searched by
measuring towards the latency plan's speedup); the peer (Torch-Pruning's MagnitudePruner, L1, round_to
the same block, exported with a plain torch.onnx.export), its ratio searched towards the latency plan's
MACs and towards its measured speedup. Uniform widths move by a whole block at once, so no ratio lands
exactly on the latency plan: each search keeps its two plans on either side (the MACs search also the
next distinct uniform plan beyond each, in case timing noise misled it), all plans of a row are timed
again interleaved with the dense model in one run, and the MACs plan and the peer are read at the
latency plan's speedup (and MACs) on the line through their two plans around it. One-shot accuracy
(BatchNorm re-estimated) where the case has data. Each finished row is saved at once: a run stopped
part-way resumes at the next row. Writes bench/results/latency.json and the README table.

Usage: python bench/latency.py [--cases resnet56-cifar,resnet20-cifar,mobilenet_v2,resnet50] [--targets cpu,openvino]
                               [--batches 1,8] [--speedups 1.5,2,3] [--seconds 2]"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from common import ROOT, SHARED, cifar10_root, machine, write_results

RESULTS = ROOT / "bench" / "results" / "latency.json"
CASES = {  # batches: None takes --batches
    "resnet56-cifar": {"model": "cifar:resnet56", "weights": str(SHARED / "models" / "resnet56-cifar10.th"),
                       "data": "cifar", "image": (3, 32, 32), "batches": (64,), "targets": ("cpu",),
                       "peer": False},  # option-A shortcuts: Torch-Pruning cannot trace them
    "resnet20-cifar": {"model": "cifar:resnet20", "weights": str(SHARED / "models" / "resnet20-cifar10.th"),
                       "data": "cifar", "image": (3, 32, 32), "batches": (64,), "targets": ("cpu",), "peer": False},
    "mobilenet_v2": {"model": "torchvision:mobilenet_v2", "image": (3, 224, 224), "batches": None, "targets": None,
                     "peer": True},
    "resnet50": {"model": "torchvision:resnet50", "image": (3, 224, 224), "batches": None, "targets": None, "peer": True},
}  # fmt: skip
SEARCH_PROBES = 6
RATIO_STEPS = 360  # uniform ratios in [0, 0.9) listed for the next distinct plan either side


def setup(name: str, target: str, batch: int, seconds: float):
    """The case's resolved config, dense model, groups and L1 scores."""
    from pipeline.core.config import build_config
    from pipeline.preflight import resolve
    from pipeline.pruning.analysis import analyse
    from pipeline.scorers import SCORERS
    from pipeline.stages.common import dense_model, example_input, scoring_context

    case = CASES[name]
    data = str(cifar10_root()) if case.get("data") == "cifar" else None
    cfg = resolve(build_config(model=case["model"], weights=case.get("weights"), data=data, input_shape=(batch, *case["image"]),
                               targets=(target,), calib_samples=1024 if data else 64, eval_samples=None,
                               profile_seconds=seconds, batch_size=64))  # fmt: skip
    model = dense_model(cfg).eval()
    groups = analyse(model, example_input(cfg), (), keep_stem=False).groups  # as a --speedup run has them
    scores = SCORERS.load("l1")().score(scoring_context(cfg, model, groups, {}, lambda: iter(())))
    return cfg, model, groups, scores


def measured_sensitivity(cfg, model, groups, scores, request) -> tuple[dict, object]:
    """As --allocate sensitivity measures it: the per-group curves, and the loss of whole plans."""
    from pipeline.allocators.base import width_options
    from pipeline.stages.common import calibration_batches
    from pipeline.statistics import sensitivity

    widths = {g.name: width_options(g, request) for g in groups if g.name in scores}
    images, labels = sensitivity.first_images(calibration_batches(cfg), labelled=True, images=sensitivity.PLAN_IMAGES)
    curves = sensitivity.curves(model, groups, scores, widths, sensitivity.first_images(zip(images, labels), labelled=False)[0])
    return curves, sensitivity.PlanLoss(model, groups, scores, images, labels if cfg.data is not None else None)


def one_shot_accuracy(cfg, model, groups, scores, kept) -> float | None:
    from pipeline.allocators.base import removal_of
    from pipeline.data.loaders import accuracy
    from pipeline.models.clone import clone_model
    from pipeline.pruning import surgery
    from pipeline.stages.common import calibration_batches, evaluation_batches, example_input

    if cfg.data is None:
        return None
    pruned = clone_model(model)
    surgery.apply_removal(pruned, example_input(cfg), groups, removal_of(groups, scores, kept))
    surgery.recalibrate_batchnorm(pruned, calibration_batches(cfg))
    return accuracy(pruned, evaluation_batches(cfg))


def macs_of(model, example) -> float:
    from pipeline.pruning import macs

    return macs.count(model, example)[0]


def macs_plan_ratios(budget, groups, round_to: int, goal: float) -> list[float]:
    """One uniform ratio bisected by measuring towards `goal`'s speedup: the two ratios around it."""
    from pipeline.allocators.base import kept_counts

    def measured(ratio: float) -> float:
        dense_ms, pruned_ms = budget.measure(kept_counts(groups, ratio, round_to, 0.9))
        return dense_ms / pruned_ms

    return with_neighbours(groups, round_to, around(bisect(measured, goal, 0.9), goal))


def with_neighbours(groups, round_to: int, ratios: list[float]) -> list[float]:
    """`ratios`, one per distinct plan, and the ratio of the next distinct uniform plan on either side: where
    timing noise misled the search (both plans it kept on one side of the goal, or one plan twice), the
    line read at the latency plan's speedup still runs through plans either side of it."""
    from pipeline.allocators.base import kept_counts

    ladder = {}  # distinct uniform plans, widest first: their first ratio
    for step in range(RATIO_STEPS):
        ladder.setdefault(tuple(kept_counts(groups, step / RATIO_STEPS * 0.9, round_to, 0.9).items()), step / RATIO_STEPS * 0.9)
    plans = list(ladder)
    found = sorted({plans.index(tuple(kept_counts(groups, ratio, round_to, 0.9).items())) for ratio in ratios})
    return [ladder[plans[i]] for i in range(max(found[0] - 1, 0), min(found[-1] + 2, len(plans)))]


def bisect(reached_at, goal: float, top: float, probes: int = SEARCH_PROBES) -> list[tuple[float, float]]:
    """(ratio, value reached) of each probe of a bisection of the ratio in [0, top] towards `goal`."""
    low, high, reached = 0.0, top, []
    for _ in range(probes):
        ratio = (low + high) / 2
        reached.append((ratio, reached_at(ratio)))
        low, high = (ratio, high) if reached[-1][1] < goal else (low, ratio)
    return reached


def around(probes: list[tuple[float, float]], goal: float) -> list[float]:
    """The probed ratios that reached nearest below and nearest at-or-above `goal` (one if all lie on one side)."""
    below = [p for p in probes if p[1] < goal]
    above = [p for p in probes if p[1] >= goal]
    nearest = [max(below, key=lambda p: p[1])] if below else []
    return [p[0] for p in nearest + ([min(above, key=lambda p: p[1])] if above else [])]


class Peer:
    """Torch-Pruning's MagnitudePruner (L1, one ratio for every layer, round_to the block; the classifier
    kept whole), exported with a plain torch.onnx.export and compiled for the row's target."""

    def __init__(self, model, example, round_to: int, budget, workdir: Path):
        import torch

        self.model, self.example, self.round_to, self.budget, self.workdir = model, example, round_to, budget, workdir
        self.classifier = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
        self.pruned: dict[float, object] = {}

    def at(self, ratio: float):
        import torch
        import torch_pruning as tp

        if ratio not in self.pruned:
            candidate = copy.deepcopy(self.model)
            pruner = tp.pruner.MagnitudePruner(
                candidate, self.example[:1], importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                round_to=self.round_to, ignored_layers=[candidate.get_submodule(self.classifier)],
            )  # fmt: skip
            with torch.no_grad():
                pruner.step()
            self.pruned[ratio] = candidate.eval()
        return self.pruned[ratio]

    def compile(self, ratio: float, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        plain_export(self.at(ratio), self.example, folder / "model.onnx")
        (folder / self.budget.setting.target).mkdir(exist_ok=True)
        self.budget.target.compile(folder / "model.onnx", folder / self.budget.setting.target, "fp32", (self.example.shape[0],))
        return folder / self.budget.setting.target

    def ratios_at_macs(self, macs_reduction: float) -> list[float]:
        """The two ratios whose counted MACs reductions lie around `macs_reduction`."""
        dense = macs_of(self.model, self.example[:1])
        counted = bisect(lambda ratio: dense / macs_of(self.at(ratio), self.example[:1]), macs_reduction, 0.95, probes=12)
        return around(counted, macs_reduction)

    def ratios_at_speedup(self, speedup: float) -> list[float]:
        """The two ratios whose measured speedups lie around `speedup`."""

        def measured(ratio: float) -> float:
            times = self.budget.time({"dense": self.budget.dense_dir, "peer": self.compile(ratio, f"peer-{ratio:.4f}")})
            return measure_ms(times["dense"]) / measure_ms(times["peer"])

        return around(bisect(measured, speedup, 0.95), speedup)


def measure_ms(trials) -> float:
    from profiles import measure

    return measure.median_ms(trials)


def conv_widths(network) -> dict[str, int]:
    """Output channels of every conv layer: how a plan spread its cuts."""
    import torch

    return {name: m.out_channels for name, m in network.named_modules() if isinstance(m, torch.nn.Conv2d)}


def plain_export(model, example, path: Path) -> None:
    """The peer's export: torch.onnx.export as its README shows, nothing else."""
    import torch

    with torch.no_grad():
        torch.onnx.export(model.eval(), (example[:1],), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})  # fmt: skip


def run_row(name: str, target: str, batch: int, goal: float, seconds: float, workdir: Path) -> dict:
    from exporters.base import default_threads
    from pipeline.allocators import latency as latency_allocator
    from pipeline.allocators.base import Request, kept_counts
    from pipeline.latency.candidates import LatencyBudget, Setting
    from pipeline.pruning import macs
    from pipeline.stages.common import example_input
    from pipeline.stages.prune import channel_block

    cfg, model, groups, scores = setup(name, target, batch, seconds)
    round_to = channel_block(cfg.targets, cfg.precision)
    started = time.time()
    setting = Setting(target, "fp32", tuple(cfg.input_shape), default_threads(), seconds, 10, round_to, 0.9)
    budget = LatencyBudget(setting, model, groups, scores, workdir, speedup=goal)
    table_seconds = time.time() - started
    example = example_input(cfg)
    request = Request(groups, scores, macs.MacsEstimator(model, example, groups), round_to, False, 0.9, "uniform",
                      latency=budget)  # fmt: skip
    if cfg.data is not None:  # with data, widths valued by measured sensitivity (--allocate sensitivity)
        request.sensitivity, request.plan_loss = measured_sensitivity(cfg, model, groups, scores, request)
    allocation = latency_allocator.allocate(request)
    reached = next(r for r in allocation.details["rounds"] if r["chosen"])["measured_speedup"]
    dense_macs = macs_of(model, example)
    plans = {"latency": allocation.kept} | {
        f"macs@{ratio:.4f}": kept_counts(groups, ratio, round_to, 0.9) for ratio in macs_plan_ratios(budget, groups, round_to, reached)
    }  # fmt: skip
    networks = {plan: budget.pruned(kept) for plan, kept in plans.items()}
    compiled = {"dense": budget.dense_dir} | {plan: budget.compile(net, f"final-{plan}") for plan, net in networks.items()}
    if CASES[name]["peer"]:
        peer = Peer(model, example, round_to, budget, workdir)
        ratios = peer.ratios_at_macs(dense_macs / macs_of(networks["latency"], example)) + peer.ratios_at_speedup(reached)
        for ratio in sorted(set(ratios)):
            networks[f"peer@{ratio:.4f}"] = peer.at(ratio)
            compiled[f"peer@{ratio:.4f}"] = peer.compile(ratio, f"final-peer@{ratio:.4f}")
    times = budget.time(compiled)
    dense_ms = measure_ms(times["dense"])
    parts = {}
    for plan, network in networks.items():
        kept = plans.get(plan)
        parts[plan] = {
            "macs_ratio": dense_macs / macs_of(network, example),
            "ms": measure_ms(times[plan]),
            "speedup": dense_ms / measure_ms(times[plan]),
            "accuracy": one_shot_accuracy(cfg, model, groups, scores, kept) if kept is not None else None,
            "widths": conv_widths(network),
        }
    return {"case": name, "target": target, "batch": batch, "goal": goal, "machine": machine(),
            "table_seconds": table_seconds, "rounds": allocation.details["rounds"], "dense_ms": dense_ms, "plans": parts}  # fmt: skip


def compared(parts: dict[str, dict]) -> dict:
    """The MACs plan and the peer where the latency plan is: at its measured speedup (MACs reduction and
    accuracy on the line through their plans around it) and, for the peer, at its MACs reduction (speedup)."""
    from pipeline.allocators.latency import line_at

    ours = parts["latency"]
    uniform = [p for plan, p in parts.items() if plan.startswith("macs@")]
    if any(p["widths"] == ours["widths"] for p in uniform):  # the same plan (a goal out of reach: every group at its floor)
        uniform = [ours]
    out = {"latency": ours, "macs": {"macs_ratio": line_at([(p["speedup"], p["macs_ratio"]) for p in uniform], ours["speedup"]),
                                     "speedup": ours["speedup"]}}  # fmt: skip
    if all(p["accuracy"] is not None for p in uniform):
        out["macs"]["accuracy"] = line_at([(p["speedup"], p["accuracy"]) for p in uniform], ours["speedup"])
    peers = [p for plan, p in parts.items() if plan.startswith("peer@")]
    if peers:
        out["peer"] = {"macs_ratio": ours["macs_ratio"], "speedup": line_at([(p["macs_ratio"], p["speedup"]) for p in peers], ours["macs_ratio"])}  # fmt: skip
        out["peer_speed"] = {"macs_ratio": line_at([(p["speedup"], p["macs_ratio"]) for p in peers], ours["speedup"]), "speedup": ours["speedup"]}  # fmt: skip
    return out


def table(rows: list[dict], seconds: float) -> str:
    def cell(part: dict | None, accuracy: bool) -> str:
        if not part:
            return "-"
        text = f"{part['macs_ratio']:.2f}x / {part['speedup']:.2f}x"
        return text + (f" / {part['accuracy']:.4f}" if accuracy and part.get("accuracy") is not None else "")

    def versus(row: dict) -> str:
        return f"{row['latency']['speedup'] / row['peer']['speedup'] - 1:+.1%}" if row.get("peer") else "-"

    lines = [
        "L1 scores, fp32, channels rounded to the CPU block; every plan of a row timed again interleaved with the dense "
        f"model in one run ({seconds:g} s each). Each cell: MACs reduction / measured speedup (/ one-shot accuracy). "
        "The MACs plan (one uniform ratio) and the peer (Torch-Pruning's MagnitudePruner, L1, uniform, same block, plain "
        "torch.onnx.export) read where the latency plan is, on the line through their two measured plans around it: "
        "at its speedup, and (peer) at its MACs reduction. Last column: latency plan's speedup over the peer's at equal MACs.",
        "",
        "| case | target | batch | goal | latency plan | MACs plan, same speedup | peer, same MACs | peer, same speedup | "
        "vs peer | table s | machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["case"], r["target"], r["batch"], r["goal"])):
        r = r | compared(r["plans"])  # the readings are derived here, from the plans measured
        cells = [cell(r.get(p), p in ("latency", "macs")) for p in ("latency", "macs", "peer", "peer_speed")]
        lines.append(
            f"| {r['case']} | {r['target']} | {r['batch']} | {r['goal']:g}x | {' | '.join(cells)} | {versus(r)} | "
            f"{r['table_seconds']:.0f} | {r['machine'].split(', Python')[0]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--targets", default="cpu,openvino")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--speedups", default="2,1.5,3")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    done = {(r["case"], r["target"], r["batch"], r["goal"]) for r in rows}
    todo = [
        (name, target, batch, goal)
        for goal in map(float, args.speedups.split(","))  # every case at the first goal before the next goal
        for name in args.cases.split(",")
        for batch in CASES[name]["batches"] or tuple(map(int, args.batches.split(",")))
        for target in CASES[name]["targets"] or tuple(args.targets.split(","))
    ]
    for name, target, batch, goal in todo:
        if (name, target, batch, goal) in done:
            continue
        started = time.time()
        workdir = ROOT / "bench" / "runs" / "latency" / f"{name}-{target}-b{batch}-{goal:g}"
        rows.append(run_row(name, target, batch, goal, args.seconds, workdir))
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=2) + "\n")  # resumable: each row as it finishes
        print(f"{name} {target} batch {batch} {goal:g}x: {time.time() - started:.0f} s", flush=True)
    write_results("latency", None, table(rows, args.seconds))


if __name__ == "__main__":
    main()
