import itertools
import random

from pipeline.allocators.knapsack import solve, trim
from pipeline.allocators.worth import Additive


def _brute_force(options, budget):
    best, best_value = None, float("-inf")
    names = list(options)
    for combo in itertools.product(*(options[n] for n in names)):
        cost, value = sum(c for _, _, c in combo), sum(v for _, v, _ in combo)
        if cost <= budget and value > best_value:
            best, best_value = {n: o[0] for n, o in zip(names, combo)}, value
    return best, best_value


def _value(options, chosen):
    return sum(v for n, w in chosen.items() for width, v, _ in options[n] if width == w)


def _cost(options, chosen):
    return sum(c for n, w in chosen.items() for width, _, c in options[n] if width == w)


def test_a_constructed_table_gives_its_known_optimum():
    # layer a is cheap to shrink and its units matter little; b is expensive per unit of score:
    # under 6 ms, the optimum shrinks a to 8 and keeps b whole (value 4 + 10, cost 1 + 5)
    options = {
        "a": [(8, 4.0, 1.0), (16, 6.0, 3.0)],
        "b": [(8, 5.0, 2.5), (16, 10.0, 5.0)],
    }
    assert solve(options, budget=6.0) == {"a": 8, "b": 16}
    assert solve(options, budget=8.0) == {"a": 16, "b": 16}
    assert solve(options, budget=3.5) == {"a": 8, "b": 8}


def test_no_answer_when_even_the_cheapest_options_exceed_the_budget():
    assert solve({"a": [(8, 1.0, 2.0), (16, 2.0, 4.0)]}, budget=1.0) is None


def test_negative_costs_are_savings_against_a_reference():
    options = {"a": [(8, 1.0, -3.0), (16, 2.0, 0.0)], "b": [(8, 1.5, -2.0), (16, 2.0, 0.0)]}
    assert solve(options, budget=-2.5) == {"a": 8, "b": 16}  # saving 3 ms costs less score than saving 2


def test_matches_exhaustive_search_on_random_tables():
    rng = random.Random(0)
    for _ in range(30):
        options = {f"g{i}": [(w, rng.uniform(0, 10), rng.uniform(0, 5)) for w in range(rng.randint(1, 4))] for i in range(4)}
        budget = rng.uniform(2, 14)
        chosen = solve(options, budget, bins=20000)
        expected, expected_value = _brute_force(options, budget)
        if expected is None:
            assert chosen is None
            continue
        # never over the budget; within what rounding costs to whole bins of the optimum
        assert _cost(options, chosen) <= budget + 1e-9
        assert _value(options, chosen) >= expected_value - 1e-6 or _cost(options, expected) > budget - 4 * budget / 20000


class _SummedWidths:
    """A latency model where a plan costs the sum of its widths."""

    def predict(self, kept):
        return float(sum(kept.values()))


def test_trimming_gives_up_the_least_value_per_millisecond_until_within_the_limit():
    # where the linearised knapsack never gets within the limit, its closest plan is narrowed step by step
    widths = {"a": [1, 2, 3], "b": [1, 2, 3]}
    values = Additive({"a": {1: 1.0, 2: 2.0, 3: 3.0}, "b": {1: 1.0, 2: 5.0, 3: 6.0}})
    trimmed = trim(_SummedWidths(), widths, values, 4.0, {"a": 3, "b": 3})
    assert trimmed == {"a": 1, "b": 3}  # b's first step costs as much as a's, its second four times more
    assert trim(_SummedWidths(), widths, values, 1.0, {"a": 3, "b": 3}) == {"a": 1, "b": 1}  # out of reach: the narrowest
