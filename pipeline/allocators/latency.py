"""--speedup / --latency-ms: kept widths that keep the most of the criterion's score within a latency
predicted from per-layer tables measured on the target (a multiple-choice knapsack over each group's
widths on the channel block, as HALP), then measured whole on the target; when the measured speedup
misses by more than 5%, the next round asks the tables for the saving interpolated between the rounds
whose measurements bracket the goal (next_ask), a few rounds at most.

Scores are made comparable across groups as the ranking does: raw under the global ranking, else
divided by their group's mean and weighted by the MACs that depend on one of the group's units (a
residual stream's channel, which every block along it reads, is worth more than one inside a block;
the scores order the units within their group). A layer's time depends on its input and output widths, set by two groups: the knapsack's
costs are linearised around the current plan and re-solved until the plan stops moving."""

from __future__ import annotations

import torch

from pipeline.allocators import knapsack
from pipeline.allocators.base import Allocation, Request, floor_of, step_of

TOLERANCE = 0.05
ROUNDS = 4  # measured rounds at most
MOST_SAVING = 0.98  # of the predicted latency: a table that predicts more (or a negative latency) is capped
FIXED_POINT_STEPS = 8


def allocate(request: Request) -> Allocation:
    budget = request.latency  # pipeline.latency.candidates.LatencyBudget
    model, goal = budget.model, budget.speedup
    widths = {g.name: options(g, request) for g in request.groups if g.name in request.scores}
    weights = unit_weights(request, widths) if request.ranking != "global" else dict.fromkeys(widths, 1.0)
    values = {name: kept_values(request.scores[name], request.ranking, weights[name]) for name in widths}
    quickest = fastest(model, widths)
    most_saving = min(1.0 - model.predict(quickest) / model.dense_ms, MOST_SAVING)
    tried = [(0.0, 0.0)]  # (predicted saving asked for, saving measured): the dense model saves nothing
    rounds, ask = [], min(1.0 - 1.0 / goal, most_saving)  # first round: the tables taken at their word
    for number in range(1, ROUNDS + 1):
        kept = plan(model, widths, values, model.dense_ms * (1.0 - ask), quickest)
        if any(r["kept"] == kept for r in rounds):
            break  # the widths' steps allow nothing between: measuring the same plan again tells nothing new
        predicted = model.predict(kept)
        dense_ms, pruned_ms = budget.measure(kept)
        rounds.append({"round": number, "kept": kept, "predicted_ms": predicted, "predicted_speedup": model.dense_ms / predicted,
                       "measured_dense_ms": dense_ms, "measured_ms": pruned_ms, "measured_speedup": dense_ms / pruned_ms})  # fmt: skip
        if abs(dense_ms / pruned_ms / goal - 1.0) <= TOLERANCE:
            break
        tried.append((1.0 - predicted / model.dense_ms, 1.0 - pruned_ms / dense_ms))
        ask = next_ask(tried, 1.0 - 1.0 / goal, most_saving)
    reachable = 1.0 / (1.0 - most_saving)
    best = min(rounds, key=lambda r: abs(r["measured_speedup"] / goal - 1.0))
    notes = [
        f"latency round {r['round']}: predicted {r['predicted_ms']:.3f} ms ({r['predicted_speedup']:.2f}x), measured "
        f"{r['measured_ms']:.3f} ms against dense {r['measured_dense_ms']:.3f} ms ({r['measured_speedup']:.2f}x)"
        for r in rounds
    ]
    if abs(best["measured_speedup"] / goal - 1.0) > TOLERANCE:
        notes.append(
            f"--speedup {goal:.2f}x not met within {TOLERANCE:.0%} after {len(rounds)} measured rounds: the closest measured is "
            f"{best['measured_speedup']:.2f}x (at most {reachable:.2f}x predicted, at the fastest widths the tables know; "
            f"a finer --round-to gives finer steps)"
        )
    shown = [{k: v for k, v in r.items() if k != "kept"} | {"chosen": r is best} for r in rounds]
    return Allocation(
        best["kept"], None, request.round_to, notes, {"speedup": goal, "target": budget.setting.target, "rounds": shown}
    )


def next_ask(tried: list[tuple[float, float]], wanted: float, most: float) -> float:
    """The predicted saving to ask for next: interpolated between the two tried plans whose measured savings
    bracket the one wanted, else extrapolated through the origin and the latest (regula falsi)."""
    below = [t for t in tried if t[1] < wanted]
    above = [t for t in tried if t[1] >= wanted]
    if below and above:
        (x0, y0), (x1, y1) = max(below, key=lambda t: t[1]), min(above, key=lambda t: t[1])
        ask = x0 + (wanted - y0) * (x1 - x0) / max(y1 - y0, 1e-9)
    else:
        x, y = tried[-1]
        ask = x * wanted / y if y > 0 else x + (most - x) / 2
    return float(min(max(ask, 0.0), most))


def options(group, request: Request) -> list[int]:
    """The widths a group may keep: its channel block from the fewest allowed to all (or to the criterion's own count)."""
    step = step_of(group.kind, request.round_to)
    if group.size <= step:
        return [group.size]
    low = floor_of(group.size, step, request.max_unit_ratio)
    high = group.size
    if request.own and group.name in request.own:  # the criterion's own count is an upper bound
        high = min(group.size, max(low, -(-request.own[group.name] // step) * step))
    widths = list(range(low, high + 1, step))
    return widths if widths[-1] == high else [*widths, high]


def unit_weights(request: Request, widths: dict[str, list[int]]) -> dict[str, float]:
    """What one unit of each group is worth against the others': the MACs that depend on it (a channel of a
    residual stream feeds every block along it), relative to the mean over the groups."""
    estimator = request.estimator
    if estimator is None:
        return dict.fromkeys(widths, 1.0)
    sizes = {g.name: g.size for g in request.groups}
    per_unit = {name: max(estimator.dense - estimator.estimate({name: sizes[name] - 1}), 1) for name in widths}
    mean = sum(per_unit.values()) / max(len(per_unit), 1)
    return {name: value / mean for name, value in per_unit.items()}


def kept_values(scores: torch.Tensor, ranking: str, weight: float = 1.0) -> dict[int, float]:
    """{width: summed score of the `width` best units}, comparable across groups (module docstring)."""
    scores = scores.double().flatten()
    if ranking != "global":
        scores = weight * scores / scores.abs().mean().clamp_min(1e-12)
    ordered = scores.sort(descending=True).values.cumsum(0)
    return {w: float(ordered[w - 1]) for w in range(1, scores.numel() + 1)}


def fastest(model, widths: dict[str, list[int]]) -> dict[str, int]:
    """The widths the tables predict fastest (not always the fewest: a kernel may be slow at some width),
    each group in turn at its fastest with the others held, a few passes."""
    current = {name: w[-1] for name, w in widths.items()}
    for _ in range(3):
        for name, options_ in widths.items():
            costs = model.group_costs(name, options_, current)
            current[name] = options_[min(range(len(options_)), key=costs.__getitem__)]
    return current


def plan(model, widths: dict[str, list[int]], values: dict, target_ms: float, quickest: dict[str, int]) -> dict[str, int]:
    """The most valuable widths whose predicted latency is within `target_ms` (`quickest`, the fastest plan, when none is)."""
    best, best_value, target = None, -float("inf"), target_ms
    for _ in range(3):  # the linearisation may overshoot: tighten the knapsack's budget by the excess
        current = {name: w[-1] for name, w in widths.items()}
        for _ in range(FIXED_POINT_STEPS):
            costs = {name: model.group_costs(name, w, current) for name, w in widths.items()}
            table = {name: [(wd, values[name][wd], c) for wd, c in zip(w, costs[name])] for name, w in widths.items()}
            chosen = knapsack.solve(table, target - model.predict(current)) or quickest
            predicted, value = model.predict(chosen), sum(values[n][w] for n, w in chosen.items())
            if predicted <= target_ms and value > best_value:
                best, best_value = chosen, value
            if chosen == current:
                break
            current = chosen
        if best is not None:
            return best
        target -= predicted - target_ms
    return quickest
