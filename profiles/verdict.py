"""Did the removal give a real speedup on this target, and how close to the MACs it removed?

efficiency = speedup / macs_ratio ("realisation efficiency"). pass: the speedup's interval lies above
1 and efficiency reaches the threshold. Every fail says why, with the figures that show it."""

from __future__ import annotations

from dataclasses import dataclass

UNSTABLE_COV = 0.05  # trial-to-trial spread above which a CPU measurement is flagged


@dataclass
class Evidence:
    speedup: float
    speedup_ci: tuple[float, float]
    macs_ratio: float
    batch: int
    dense_cov: float = 0.0
    pruned_cov: float = 0.0
    fixed_ms: float | None = None
    pruned_ms: float | None = None
    misaligned: list[str] | None = None  # "layer: 50 channels (block 16)"
    block: int = 8
    by_batch_efficiency: dict[int, float] | None = None


def realisation_efficiency(speedup: float, macs_ratio: float) -> float:
    return speedup / macs_ratio if macs_ratio > 0 else 0.0


def judge(e: Evidence, min_efficiency: float) -> tuple[str, list[str]]:
    efficiency = realisation_efficiency(e.speedup, e.macs_ratio)
    reasons: list[str] = []
    if e.speedup_ci[0] <= 1.0:
        reasons.append(
            f"no measurable speedup: the 95% interval of the speedup [{e.speedup_ci[0]:.2f}, {e.speedup_ci[1]:.2f}] reaches 1"
        )
    if efficiency < min_efficiency:
        reasons.append(
            f"efficiency {efficiency:.2f} < {min_efficiency:.2f}: speedup {e.speedup:.2f}x for {e.macs_ratio:.2f}x fewer MACs"
        )
    verdict = "fail" if reasons else "pass"
    if reasons or efficiency < 0.85:
        reasons.extend(explanations(e))
    return verdict, reasons


def explanations(e: Evidence) -> list[str]:
    """Why a target realised less than the MACs promised, from what was measured."""
    why: list[str] = []
    if e.fixed_ms is not None and e.pruned_ms:
        share = e.fixed_ms / e.pruned_ms
        if share > 0.2:
            why.append(
                f"about {e.fixed_ms:.2f} ms per call ({share:.0%} of the pruned latency) does not scale with MACs "
                f"(runtime overhead, memory-bound and unpruned layers): channel removal cannot reduce it"
            )
    if e.by_batch_efficiency:
        best_batch = max(e.by_batch_efficiency, key=e.by_batch_efficiency.get)
        best = e.by_batch_efficiency[best_batch]
        here = e.by_batch_efficiency.get(e.batch)
        if here is not None and best_batch != e.batch and best > here + 0.1:
            why.append(
                f"efficiency grows with batch size ({here:.2f} at batch {e.batch}, {best:.2f} at batch {best_batch}): "
                f"at batch {e.batch} fixed per-layer costs dominate the smaller model"
            )
    if e.batch == 1 and not e.by_batch_efficiency:
        why.append(
            "batch 1 leaves little work per layer; profile larger batches with --batch-sizes 1,8,32 to see where the gain appears"
        )
    if e.misaligned:
        shown = "; ".join(e.misaligned[:3]) + (f"; and {len(e.misaligned) - 3} more" if len(e.misaligned) > 3 else "")
        why.append(
            f"{len(e.misaligned)} layer(s) have widths that are not multiples of the runtime's channel block {e.block}, which pads them back: {shown}"
        )
    if max(e.dense_cov, e.pruned_cov) > UNSTABLE_COV:
        why.append(
            f"unstable measurement: trial-to-trial spread {max(e.dense_cov, e.pruned_cov):.1%} > {UNSTABLE_COV:.0%} (other load on the machine?)"
        )
    return why
