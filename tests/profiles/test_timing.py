import time

from profiles import timing


def test_interleaved_times_every_callable_in_every_trial():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.002)

    results = timing.interleaved({"fast": fast, "slow": slow}, seconds=0.05, trials=4, warmup_seconds=0.01)
    assert len(results["fast"]) == len(results["slow"]) == 4
    assert all(len(t) >= 3 for t in results["slow"])
    slow_median = sorted(x for t in results["slow"] for x in t)[len(results["slow"][0]) * 2]
    assert slow_median >= 0.002
    assert calls["fast"] > calls["slow"]  # more calls of the quicker one fill the same time
