"""How the latency budget times the dense model against candidates: the control logic, on scripted timings
(the real compile-and-time path runs in the end-to-end --speedup test)."""

from pathlib import Path
from types import SimpleNamespace

from pipeline.latency.candidates import LatencyBudget


def _budget(dense_ms_each_call: list[float], pruned_ms: float = 1.0, settled: float | None = None) -> LatencyBudget:
    """A budget whose `time` returns the next scripted dense time (and `pruned_ms` for a candidate)."""
    budget = object.__new__(LatencyBudget)
    budget.dense_dir = Path("dense")
    budget.model = SimpleNamespace(dense_ms=settled)
    calls = iter(dense_ms_each_call)

    def time(compiled):
        times = {"dense": [[next(calls) / 1000.0]]}
        return times | ({"pruned": [[pruned_ms / 1000.0]]} if "pruned" in compiled else {})

    budget.time = time
    return budget


def test_the_dense_model_is_timed_until_two_timings_in_a_row_agree():
    assert _budget([9.0, 3.4, 3.3, 3.0])._settled_dense_ms() == 3.3  # 3.4 then 3.3: within 5%
    assert _budget([9.0, 5.0, 3.0, 2.0, 1.0])._settled_dense_ms() == 1.0  # never agree: the last of five


def test_a_round_timed_on_a_busy_machine_is_timed_again_once():
    assert _budget([8.0, 3.1], settled=3.0)._against_dense(Path("pruned")) == (3.1, 1.0)
    assert _budget([8.0, 7.0, 3.0], settled=3.0)._against_dense(Path("pruned")) == (7.0, 1.0)  # once, not more
    assert _budget([3.3], settled=3.0)._against_dense(Path("pruned")) == (3.3, 1.0)  # within 15%: kept
