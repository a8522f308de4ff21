"""--speedup / --latency-ms: kept widths that keep the most of the criterion's score within a latency
predicted from per-layer tables measured on the target (a multiple-choice knapsack over each group's
widths on the channel block, as HALP), then measured whole on the target; when the measured speedup
misses by more than 5%, the next round asks the tables for the saving interpolated between the rounds
whose measurements bracket the goal (next_ask), a few rounds at most.

What a plan is worth (pipeline.allocators.worth): with --allocate sensitivity, minus its groups' measured
sensitivity; under the global ranking, the raw scores kept; else the MACs the kept units carry, each
unit's part weighted by its score within its group (a residual stream's channel, which every block along
it reads, is worth more than one inside a block). The scores always order the units within their group.
With --allocate sensitivity, plans are also measured whole: each round's widths are searched from the
uniform plan short of the latency (pipeline.allocators.plan_search), and the knapsack's plan is kept only
where it measures the lesser loss. The uniform plans either side of the goal are measured on the
target too, and of the plans within 5% of the goal the one kept is the one that beats the uniform plans'
trade-off by most: its loss furthest below their line at its measured speedup (chosen)."""

from __future__ import annotations

import time

import torch

from pipeline.allocators.base import Allocation, Request, width_options
from pipeline.allocators.knapsack import fastest, plan
from pipeline.allocators.plan_search import descend, uniform_around, uniform_start
from pipeline.allocators.sensitivity import sensitivity_details, sensitivity_values
from pipeline.allocators.worth import Additive, CarriedMacs

TOLERANCE = 0.05
ROUNDS = 6  # measured rounds at most
BETWEEN_TRIES = 4  # asks tried for a plan between two measured ones
MOST_SAVING = 0.98  # of the predicted latency: a table that predicts more (or a negative latency) is capped


def allocate(request: Request) -> Allocation:
    budget = request.latency  # pipeline.latency.candidates.LatencyBudget
    model, goal = budget.model, budget.speedup
    widths = {g.name: width_options(g, request) for g in request.groups if g.name in request.scores}
    worth = Additive(sensitivity_values(request.sensitivity, widths)) if request.sensitivity else score_worth(request, widths)
    quickest = fastest(model, widths)
    most_saving = min(1.0 - model.predict(quickest) / model.dense_ms, MOST_SAVING)
    wanted = 1.0 - 1.0 / goal
    tried = [(0.0, 0.0)]  # (predicted saving asked for, saving measured): the dense model saves nothing
    rounds, ask = [], min(wanted, most_saving)  # first round: the tables taken at their word
    plan_at = Planner(request, widths, worth, quickest)
    for _ in range(ROUNDS):
        kept = unmeasured(plan_at, ask, [r["kept"] for r in rounds], tried, wanted, most_saving)
        if kept is None:
            break  # the widths' steps allow nothing between the plans measured: measuring one again tells nothing new
        rounds.append(_measured_round(budget, kept, len(rounds) + 1))
        tried.append((1.0 - rounds[-1]["predicted_ms"] / model.dense_ms, 1.0 - 1.0 / rounds[-1]["measured_speedup"]))
        if abs(rounds[-1]["measured_speedup"] / goal - 1.0) <= TOLERANCE:
            break
        ask = next_ask(tried, wanted, most_saving)
    if request.plan_loss is not None:  # the uniform plans either side of the goal, as the tables now read it
        rounds += _uniform_rounds(request, widths, model.dense_ms * (1.0 - next_ask(tried, wanted, most_saving)), rounds)
    best, why = chosen(rounds, goal, request.plan_loss)
    notes = _notes(rounds, best, goal, 1.0 / (1.0 - most_saving)) + plan_at.notes()
    notes += [f"latency: round {best['round']} chosen, {why}"] if why else []
    shown = [{k: v for k, v in r.items() if k != "kept"} | _loss_of(r, request.plan_loss) | {"chosen": r is best}
             for r in rounds]  # fmt: skip
    details = {"speedup": goal, "target": budget.setting.target, "rounds": shown}
    if request.plan_loss is not None:
        details["plans_measured_whole"] = request.plan_loss.measured
    if request.sensitivity:
        details["sensitivity"] = sensitivity_details(request.sensitivity, best["kept"])
    return Allocation(best["kept"], None, request.round_to, notes, details)


def _measured_round(budget, kept: dict[str, int], number: int) -> dict:
    predicted = budget.model.predict(kept)
    dense_ms, pruned_ms = budget.measure(kept)
    return {"round": number, "kept": kept, "predicted_ms": predicted, "predicted_speedup": budget.model.dense_ms / predicted,
            "measured_dense_ms": dense_ms, "measured_ms": pruned_ms, "measured_speedup": dense_ms / pruned_ms}  # fmt: skip


def _uniform_rounds(request: Request, widths: dict[str, list[int]], limit: float, rounds: list[dict]) -> list[dict]:
    """The uniform plans either side of `limit` measured on the target; a round that measured one already is
    marked as such instead of measured again."""
    above, within = uniform_around(request.groups, widths, request.latency.model, limit, request.round_to, request.max_unit_ratio)
    fresh = []
    for kept in [above] + ([within] if within not in (None, above) else []):
        done = next((r for r in rounds if r["kept"] == kept), None)
        if done is not None:
            done["plan"] = "uniform"
        else:
            fresh.append(_measured_round(request.latency, kept, len(rounds) + len(fresh) + 1) | {"plan": "uniform"})
    return fresh


def chosen(rounds: list[dict], goal: float, loss) -> tuple[dict, str]:
    """The round to keep, and why. Of those within TOLERANCE of the goal, with plans measured whole and two
    uniform plans measured: the one whose loss lies furthest below the uniform plans' line at its
    measured speed (it beats one ratio for every group by most, wherever in the tolerance it landed; a
    uniform plan scores 0 there), the closest to the goal on a tie; with fewer uniform plans, the least
    loss. Else, or where none is within, the one measured closest to the goal."""
    closeness = lambda r: abs(r["measured_speedup"] / goal - 1.0)  # noqa: E731
    near = [r for r in rounds if closeness(r) <= TOLERANCE]
    if not near or loss is None:
        return min(rounds, key=closeness), ""
    within = f"of the {len(near)} rounds within {TOLERANCE:.0%} of the goal"
    uniform = [(r["measured_speedup"], loss(r["kept"])) for r in rounds if r.get("plan") == "uniform"]
    if len(set(uniform)) < 2:
        best = min(near, key=lambda r: loss(r["kept"]))
        return best, f"the least loss ({loss(best['kept']):.4f}) {within}"
    below = {id(r): line_at(uniform, r["measured_speedup"]) - loss(r["kept"]) for r in near}
    best = max(near, key=lambda r: (round(below[id(r)], 9), -closeness(r)))
    return best, (f"{within}, the one whose loss lies furthest below the uniform plans' line at its measured "
                  f"speedup ({below[id(best)]:+.4f})")  # fmt: skip


def line_at(points: list[tuple[float, float]], x: float) -> float:
    """y at `x` on the line through the two (x, y) points nearest around it (extended past the ends)."""
    points = sorted(set(points))
    if len(points) == 1:
        return points[0][1]
    index = min(max(sum(p[0] < x for p in points), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[index - 1], points[index]
    return (y0 + y1) / 2 if x1 == x0 else y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def _loss_of(measured_round: dict, loss) -> dict:
    return {} if loss is None else {"loss": loss(measured_round["kept"])}


def _notes(rounds: list[dict], best: dict, goal: float, reachable: float) -> list[str]:
    notes = [
        f"latency round {r['round']}{' (uniform plan)' if r.get('plan') == 'uniform' else ''}: predicted {r['predicted_ms']:.3f} ms ({r['predicted_speedup']:.2f}x), measured "
        f"{r['measured_ms']:.3f} ms against dense {r['measured_dense_ms']:.3f} ms ({r['measured_speedup']:.2f}x)"
        for r in rounds
    ]
    if abs(best["measured_speedup"] / goal - 1.0) > TOLERANCE:
        notes.append(
            f"--speedup {goal:.2f}x not met within {TOLERANCE:.0%} after {len(rounds)} measured rounds: the closest measured is "
            f"{best['measured_speedup']:.2f}x (at most {reachable:.2f}x predicted, at the fastest widths the tables know; "
            f"a finer --round-to gives finer steps)"
        )
    return notes


class Planner:
    """saving -> the widths for that predicted saving of the latency: the knapsack's; with plans measured
    whole (request.plan_loss), the one of least loss of it and the search from the uniform plan."""

    def __init__(self, request: Request, widths: dict[str, list[int]], worth, quickest: dict[str, int]):
        self.request, self.widths, self.worth, self.quickest = request, widths, worth, quickest
        self.model, self.loss, self.seconds = request.latency.model, request.plan_loss, 0.0

    def __call__(self, saving: float) -> dict[str, int]:
        limit = self.model.dense_ms * (1.0 - saving)
        kept = plan(self.model, self.widths, self.worth, limit, self.quickest)
        if self.loss is None:
            return kept
        started, r = time.perf_counter(), self.request
        start = uniform_start(r.groups, self.widths, self.model, limit, r.round_to, r.max_unit_ratio)
        kept = min((descend(start, self.widths, self.model, limit, self.loss, self.worth), kept), key=self.loss)
        self.seconds += time.perf_counter() - started
        return kept

    def notes(self) -> list[str]:
        if self.loss is None:
            return []
        return [
            f"latency: widths searched from the uniform plan, {self.loss.measured} plans measured whole in "
            f"{self.seconds:.0f} s ({self.loss.what}, BatchNorm re-estimated)"
        ]


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


def unmeasured(plan_at, ask: float, measured: list[dict], tried: list[tuple[float, float]], wanted: float,
               most: float) -> dict[str, int] | None:  # fmt: skip
    """The plan for `ask`; where that plan was measured already, the ask moved halfway towards the nearest
    plan measured on the goal's other side (or the limit) a few times, for a plan between the two."""
    for _ in range(BETWEEN_TRIES):
        kept = plan_at(ask)
        if kept not in measured:
            return kept
        _, saved = tried[measured.index(kept) + 1]  # tried[0] is the dense model
        if saved < wanted:  # too slow: towards the least predicted saving that measured fast enough
            ask = (ask + min([t[0] for t in tried if t[1] >= wanted], default=most)) / 2
        else:
            ask = (ask + max([t[0] for t in tried if t[1] < wanted], default=0.0)) / 2
    return None


def score_worth(request: Request, widths: dict[str, list[int]]):
    """The criterion's scores as a plan's worth (module docstring)."""
    if request.ranking != "global" and request.estimator is not None:
        return CarriedMacs(request.estimator, {name: request.scores[name] for name in widths})
    return Additive({name: kept_values(request.scores[name], request.ranking) for name in widths})


def kept_values(scores: torch.Tensor, ranking: str) -> dict[int, float]:
    """{width: summed score of the `width` best units}: raw under the global ranking, else divided by the
    group's mean (comparable across groups)."""
    scores = scores.double().flatten()
    if ranking != "global":
        scores = scores / scores.abs().mean().clamp_min(1e-12)
    ordered = scores.sort(descending=True).values.cumsum(0)
    return {w: float(ordered[w - 1]) for w in range(1, scores.numel() + 1)}
