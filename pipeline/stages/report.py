"""report: report.json (the contract in design.md), report.md and plots, from the stage artifacts."""

from __future__ import annotations

import csv
from pathlib import Path

from exporters import TARGETS
from pipeline import plots
from pipeline.core.artifacts import read_json, read_manifest, write_json
from pipeline.stages import artifact
from pipeline.stages.common import StageContext, final_model_stage
from profiles import layers as profiled_layers
from profiles import stats
from profiles.verdict import Evidence, judge, realisation_efficiency

OWN_BUDGET_FIELDS = ("k", "knee", "critical", "neutral", "detrimental")  # per-layer facts a criterion's budget gives


def _final_accuracy(run_dir: Path, one_shot):
    history = artifact(run_dir, "distill", "history")
    if final_model_stage(run_dir) == "distill" and history.is_file():
        rows = list(csv.DictReader(history.open()))
        if rows and rows[-1]["accuracy"] not in ("", "None"):
            return float(rows[-1]["accuracy"])
    return one_shot


def _misaligned(plan: dict, block: int) -> list[str]:
    return [
        f"{g['name']}: {g['kept']} {g['kind']}s"
        for g in plan["groups"]
        if g["kind"] != "head" and g["kept"] < g["size"] and g["kept"] % block
    ]


def target_result(target: str, latency: dict, plan: dict, metrics: dict, cfg) -> dict:
    macs_ratio = metrics["macs_ratio"]
    batches = latency["batches"]
    main = str(plan["input_shape"][0])
    efficiency_by_batch = {int(b): realisation_efficiency(r["speedup"], macs_ratio) for b, r in batches.items()}
    block = TARGETS.load_class(target)().block(cfg.precision)

    def figures(batch: str) -> dict:
        r = batches[batch]
        evidence = Evidence(
            speedup=r["speedup"],
            speedup_ci=tuple(r["speedup_ci"]),
            macs_ratio=macs_ratio,
            batch=int(batch),
            dense_cov=r["dense_ms"]["cov"],
            pruned_cov=r["pruned_ms"]["cov"],
            pruned_ms=r["pruned_ms"]["p50"],
            fixed_ms=stats.fixed_cost_ms(
                r["dense_ms"]["p50"], r["pruned_ms"]["p50"], metrics["dense"]["macs"], metrics["pruned"]["macs"]
            ),
            misaligned=_misaligned(plan, block),
            block=block,
            by_batch_efficiency=efficiency_by_batch if len(batches) > 1 else None,
        )
        verdict, reasons = judge(evidence, cfg.min_efficiency)
        reasons = reasons + latency.get("runtime_notes", [])  # what the runtime did to the widths (TensorRT layer info)
        checked = latency.get("parity", {})
        if checked.get("ok") is False:
            reasons.append(
                f"{latency['precision']} outputs stray from fp32 PyTorch: top-1 agreement "
                f"{checked.get('pruned_top1_agreement', 0):.2f} on the reference batch (check the accuracy in export/parity.json)"
            )
        return {
            "dense_ms": {k: r["dense_ms"][k] for k in ("p50", "p90", "p99")},
            "pruned_ms": {k: r["pruned_ms"][k] for k in ("p50", "p90", "p99")},
            "speedup": r["speedup"],
            "speedup_ci": r["speedup_ci"],
            "macs_ratio": macs_ratio,
            "efficiency": realisation_efficiency(r["speedup"], macs_ratio),
            "parity_max_abs": latency.get("parity", {}).get("pruned_max_abs"),
            "parity_ok": latency.get("parity", {}).get("ok"),
            "verdict": verdict,
            "reasons": reasons,
        }

    result = figures(main)
    result["threads"], result["precision"] = latency["threads"], latency["precision"]
    if latency.get("layers") and metrics.get("layers"):
        result["layers"] = per_layer(latency["layers"], metrics["layers"], block)
    if len(batches) > 1:
        result["by_batch"] = {b: figures(b) for b in batches}
    return result


def per_layer(times: dict, layers: dict, block: int) -> dict:
    """Each layer's MACs and time, dense and pruned, and the layers whose time shrank least against their MACs."""
    dense, pruned = times["dense"]["modules"], times["pruned"]["modules"]
    macs = {name: layer["macs"] for name, layer in layers.items()}
    rows = profiled_layers.slowest_to_shrink(dense, pruned, macs)
    for row in rows:
        facts = layers[row["layer"]]
        row["reason"] = profiled_layers.reason(row, "depthwise" if facts["depthwise"] else "dense", facts["out"], block)
    shares = [
        {"layer": name, "macs": macs[name], "ms": [dense[name], pruned[name]]}
        for name in macs
        if name in dense and name in pruned
    ]
    other = [times["dense"]["other_ms"], times["pruned"]["other_ms"]]
    return {"slowest_to_shrink": rows, "all": shares, "other_ms": other}


def build_report(run_dir: Path, cfg) -> dict:
    plan = read_json(artifact(run_dir, "prune", "plan"))
    metrics = read_json(artifact(run_dir, "prune", "metrics"))
    dense_accuracy = read_json(artifact(run_dir, "calibrate", "accuracy"))["dense"]
    one_shot = metrics["pruned"]["accuracy_one_shot"]
    report = {
        "model": plan["model"],
        "scorer": plan["scorer"],
        "ratio": plan["units_removed"],  # the fraction of all prunable units removed
        "budget": plan["budget"],
        "input_shape": plan["input_shape"],
        "dense": {**metrics["dense"], "accuracy": dense_accuracy},
        "pruned": {
            "macs": metrics["pruned"]["macs"],
            "params": metrics["pruned"]["params"],
            "accuracy": _final_accuracy(run_dir, one_shot),
            "accuracy_one_shot": one_shot,
        },
        "scorer_options": {
            "ranking": plan.get("ranking"),
            "compensation": plan.get("compensation"),
            "bn_recalibration": plan.get("bn_recalibration"),
            "snip_at_init": cfg.snip_at_init if cfg.scorer == "snip" else None,
        },
        "macs_ratio": metrics["macs_ratio"],
        "macs_reduction_target": cfg.macs_reduction,
        "round_to": plan["round_to"],
        "distill_epochs": cfg.distill_epochs,
        "weights": plan["weights"],
        "data": cfg.data,
        "targets": {},
        "layers": [{"name": g["name"], "kind": g["kind"], "size": g["size"], "kept": g["kept"]} for g in plan["groups"]],
        "notes": plan["notes"],
    }
    if "latency" in metrics:  # the latency budget's measured rounds
        report["latency_budget"] = metrics["latency"]
    if "sensitivity" in metrics:  # each group's measured curve and the width allocated to it
        report["sensitivity"] = metrics["sensitivity"]
    report["precision"] = cfg.precision
    parity = artifact(run_dir, "export", "parity")
    if cfg.precision == "int8" and parity.is_file():  # the Q/DQ graphs every target ran
        quantised = read_json(parity).get("int8", {})
        report["int8"] = {
            flavour: {v: {k: facts[v].get(k) for k in ("accuracy", "top1_agreement", "max_abs")} for v in facts}
            for flavour, facts in quantised.items()
        }
    own = metrics.get("own_budget")
    if own:  # CoSeP / C-SWAP: the per-layer counts the criterion chose and the MACs ratio they give
        report["own_budget"] = {
            "macs_ratio": own["macs_ratio"],
            "scaled": cfg.budget == "own-scaled",
        }
        for layer in report["layers"]:
            if layer["name"] in own["kept"]:
                layer["chosen"] = own["kept"][layer["name"]]
                layer.update({k: v for k, v in own["details"].get(layer["name"], {}).items() if k in OWN_BUDGET_FIELDS})
    for target in cfg.targets:
        latency_path = artifact(run_dir, "profile", "latency", target)
        if read_manifest(latency_path.parent) is not None:
            report["targets"][target] = target_result(target, read_json(latency_path), plan, metrics, cfg)
    return report


def _fmt(value, spec=".4f"):
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    lines = [
        f"# Pruning report: {report['model']}",
        "",
        f"Scorer `{report['scorer']}` ({', '.join(f'{k} {v}' for k, v in report['scorer_options'].items() if v is not None)}), "
        f"{report['ratio']:.1%} of the prunable units removed, input {'x'.join(map(str, report['input_shape']))}, "
        f"channels rounded to {report['round_to']}, distillation epochs {report['distill_epochs']}.",
        "",
        "| | MACs | params | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for name in ("dense", "pruned"):
        part = report[name]
        lines.append(f"| {name} | {part['macs'] / 1e6:.1f} M | {part['params'] / 1e6:.3f} M | {_fmt(part['accuracy'])} |")
    lines += [
        "",
        f"MACs ratio (dense / pruned): **{report['macs_ratio']:.2f}x**; one-shot accuracy {_fmt(report['pruned']['accuracy_one_shot'])}; "
        f"precision {report.get('precision', 'fp32')}.",
        "",
    ]
    if "int8" in report:
        lines += [
            f"INT8 (Q/DQ graphs, {flavour} activations): {v} accuracy {_fmt(r['accuracy'])}, top-1 agreement with "
            f"FP32 PyTorch {_fmt(r['top1_agreement'], '.3f')}"
            for flavour, facts in report["int8"].items()
            for v, r in facts.items()
        ] + [""]
    lines += [
        "## Latency per target",
        "",
        "| target | batch | dense p50 ms | pruned p50 ms | speedup [95% CI] | efficiency | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for target, result in report["targets"].items():
        for batch, r in (result.get("by_batch") or {str(report["input_shape"][0]): result}).items():
            lines.append(
                f"| {target} | {batch} | {r['dense_ms']['p50']:.3f} | {r['pruned_ms']['p50']:.3f} | "
                f"{r['speedup']:.2f}x [{r['speedup_ci'][0]:.2f}, {r['speedup_ci'][1]:.2f}] | {r['efficiency']:.2f} | {r['verdict']} |"
            )
    for target, result in report["targets"].items():
        if result["reasons"]:
            lines += ["", f"**{target}** ({result['verdict']}):"] + [f"- {reason}" for reason in result["reasons"]]
    lines += _latency_budget_lines(report.get("latency_budget"))
    if report.get("sensitivity"):
        lines += [
            "", "## Widths by measured sensitivity", "",
            "Each group cut alone to a few widths, its lowest-scored units first; the curve is how far the outputs on "
            "calibration images move (KL divergence from the dense predictions). The widths of least summed sensitivity "
            "within the budget were kept.", "", "![sensitivity per group](plots/sensitivity.png)",
        ]  # fmt: skip
    for target, result in report["targets"].items():
        lines += _why_not_faster_lines(target, result.get("layers"))
    lines += ["", "## Kept units per layer", ""]
    if "own_budget" in report:
        extra = [f for f in OWN_BUDGET_FIELDS if any(f in layer for layer in report["layers"])]
        lines += [
            f"The criterion chose each layer's count itself; those counts give {report['own_budget']['macs_ratio']:.2f}x "
            f"fewer MACs{' (then scaled to the budget asked for)' if report['own_budget']['scaled'] else ''}.",
            "",
            "| layer | kind | kept / dense | chosen by the criterion | " + " | ".join(extra) + " |",
            "|---|---|---:|---:|" + "---|" * len(extra),
        ]
        lines += [
            f"| {l['name']} | {l['kind']} | {l['kept']} / {l['size']} | {l.get('chosen', '-')} | "
            + " | ".join(str(l.get(f, "-")) for f in extra)
            + " |"
            for l in report["layers"]
        ]
    else:
        lines += ["| layer | kind | kept / dense |", "|---|---|---:|"]
        lines += [f"| {l['name']} | {l['kind']} | {l['kept']} / {l['size']} |" for l in report["layers"]]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    lines += ["", "![latency](plots/latency.png)", "", "![kept units](plots/kept_units.png)", ""]
    return "\n".join(lines)


def _latency_budget_lines(budget: dict | None) -> list[str]:
    if not budget:
        return []
    searched = budget.get("plans_measured_whole")
    how = (
        f" Each round's widths searched from the uniform plan by measured sensitivity ({searched} plans measured whole on the "
        "calibration images); the uniform plans either side of the goal measured too, and of the rounds within 5% the one "
        "whose loss lies furthest below the uniform plans' line at its measured speedup chosen."
        if searched
        else ""
    )
    lines = [
        "", f"## Latency budget: {budget['speedup']:.2f}x on {budget.get('target', 'the first target')}", "",
        "Widths allocated from per-layer latency tables, then measured whole on the target; a miss over 5% corrects the next round." + how,
        "", "| round | predicted ms | predicted speedup | measured dense ms | measured pruned ms | measured speedup | |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for r in budget["rounds"]:
        lines.append(
            f"| {r['round']}{' (uniform)' if r.get('plan') == 'uniform' else ''} | {r['predicted_ms']:.3f} | {r['predicted_speedup']:.2f}x | {r['measured_dense_ms']:.3f} | "
            f"{r['measured_ms']:.3f} | {r['measured_speedup']:.2f}x | {_round_remark(r)} |"
        )
    return lines


def _round_remark(measured_round: dict) -> str:
    loss = measured_round.get("loss")
    remarks = [f"loss {loss:.4f}" if loss is not None else "", "chosen" if measured_round["chosen"] else ""]
    return ", ".join(r for r in remarks if r)


def _why_not_faster_lines(target: str, layers: dict | None) -> list[str]:
    if not layers or not layers["slowest_to_shrink"]:
        return []
    dense_other, pruned_other = layers["other_ms"]
    lines = [
        "", f"## Why not faster on {target}, per layer", "",
        "The layers whose time shrank least against their MACs (the runtime's own profiler, at the profiled batch); "
        "*excess* is the time above one proportional to the MACs kept.",
        "", "| layer | MACs kept | time kept | dense ms | pruned ms | excess ms | why |", "|---|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for r in layers["slowest_to_shrink"]:
        lines.append(
            f"| {r['layer']} | {r['macs_kept']:.0%} | {r['time_kept']:.0%} | {r['dense_ms']:.3f} | {r['pruned_ms']:.3f} | "
            f"{r['excess_ms']:.3f} | {r['reason']} |"
        )
    lines += [
        "",
        f"Layers without weights (element-wise, pooling, layout reorders): {dense_other:.3f} ms dense, {pruned_other:.3f} ms pruned.",
    ]
    return lines + ["", f"![MACs and time per layer](plots/layers-{target}.png)"]


def run(ctx: StageContext) -> None:
    report = build_report(ctx.run_dir, ctx.cfg)
    write_json(ctx.output("json"), report)
    ctx.output("markdown").write_text(markdown(report))
    ctx.output("plots").mkdir()
    if report["targets"]:
        plots.latency_plot(report, ctx.output("plots") / "latency.png")
    for target, result in report["targets"].items():
        if result.get("layers"):
            plots.layer_share_plot(
                result["layers"]["all"], ctx.output("plots") / f"layers-{target}.png", f"{report['model']} on {target}"
            )
    if report.get("sensitivity"):
        plots.sensitivity_plot(report["sensitivity"], ctx.output("plots") / "sensitivity.png", report["model"])
    plots.kept_units_plot(
        report["layers"],
        ctx.output("plots") / "kept_units.png",
        f"{report['model']}: units kept per layer ({report['macs_ratio']:.2f}x fewer MACs)",
    )
