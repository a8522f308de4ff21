"""Structured pruning for deployment: calibrate, score, prune, distill, export, compile, profile, report.

Keep this file free of imports: `exporters` and `profiles` import `pipeline.core`, which runs this
file first, and `pipeline --help` must stay fast.
"""

__version__ = "0.1.0"
