"""Structured pruning for deployment: calibrate, score, prune, distill, export, compile, profile, report.

Python API: `pipeline.run(model, calib_data=..., eval_data=..., ...)` and `pipeline.load_pruned(run_dir)`
(pipeline.api). This file imports nothing at load time: `exporters` and `profiles` import
`pipeline.core`, which runs this file first, and `pipeline --help` must stay fast.
"""

__version__ = "0.1.0"
__all__ = ["run", "load_pruned"]


def __getattr__(name: str):
    if name in __all__:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute '{name}'")
