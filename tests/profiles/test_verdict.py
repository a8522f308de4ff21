from profiles.verdict import Evidence, judge, realisation_efficiency


def test_efficiency_is_speedup_over_macs_ratio():
    assert realisation_efficiency(1.5, 2.0) == 0.75


def test_pass_needs_interval_above_one_and_efficiency():
    verdict, reasons = judge(Evidence(1.9, (1.85, 1.95), 2.0, batch=8), min_efficiency=0.5)
    assert verdict == "pass" and reasons == []


def test_no_speedup_fails_with_the_interval():
    verdict, reasons = judge(Evidence(1.02, (0.97, 1.06), 2.0, batch=8), min_efficiency=0.5)
    assert verdict == "fail" and "reaches 1" in reasons[0] and any("efficiency 0.51" in r for r in reasons) is False


def test_low_efficiency_is_explained():
    evidence = Evidence(
        1.3,
        (1.25, 1.35),
        2.0,
        batch=1,
        fixed_ms=0.8,
        pruned_ms=1.1,
        misaligned=["layer1.0.conv1: 8 channels"],
        block=16,
        by_batch_efficiency={1: 0.65, 8: 0.95},
    )
    verdict, reasons = judge(evidence, min_efficiency=0.7)
    text = " ".join(reasons)
    assert verdict == "fail" and "efficiency 0.65 < 0.70" in text
    assert "does not scale with MACs" in text and "grows with batch size" in text and "channel block 16" in text


def test_unstable_measurement_is_flagged():
    _, reasons = judge(Evidence(1.0, (0.8, 1.2), 2.0, batch=1, dense_cov=0.2), min_efficiency=0.5)
    assert any("unstable" in r for r in reasons)
