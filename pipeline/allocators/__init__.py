"""Budget allocators: how many units each group keeps. One line each; the run's `budget` (resolved at
preflight from --ratio, --macs-reduction and the criterion) names one, and
each is a function of an allocators.base.Request returning an allocators.base.Allocation."""

from pipeline.core.registry import Entry, Registry

ALLOCATORS = Registry(
    "allocator",
    [
        Entry("ratio", "pipeline.allocators.ratio:allocate", "one fraction of the units: the same in every group (uniform) or one score threshold (global)"),
        Entry("macs", "pipeline.allocators.macs:allocate", "the fraction searched until the MACs reduction is met within 5%"),
        Entry("latency", "pipeline.allocators.latency:allocate", "widths by a knapsack over per-layer latency tables measured on the target, corrected by measuring the whole model (--speedup, --latency-ms)"),
        Entry("sensitivity", "pipeline.allocators.sensitivity:allocate", "widths of least measured sensitivity within --macs-reduction or --ratio (--allocate sensitivity)"),
        Entry("own", "pipeline.allocators.own:as_chosen", "the criterion's own per-group counts (CoSeP, C-SWAP)"),
        Entry("own-scaled", "pipeline.allocators.own:scaled", "the criterion's counts scaled by one factor to meet --ratio or --macs-reduction"),
    ],
)  # fmt: skip
