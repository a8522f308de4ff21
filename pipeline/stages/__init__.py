"""The stages, in order: the one description of each (what it reads, the config keys and extras its
output depends on, the files it writes). Each is `run(ctx)` in its own module; the runner, the CLI
and the stages' readers of upstream artifacts all work from this table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import ConfigError

# fields of the training loop that the prune stage depends on only with --iterative
_TRAINING_KEYS = ("distill_epochs", "distill_optimizer", "distill_lr", "distill_temperature", "distill_alpha",
                  "train_samples", "regularize", "amp")  # fmt: skip


@dataclass(frozen=True)
class StageSpec:
    name: str
    path: str  # "module:function"
    config_keys: tuple[str, ...]  # the RunConfig fields its output depends on
    outputs: dict[str, str] = field(default_factory=dict)  # role -> file name in its directory
    reads: tuple[str, ...] = ()  # upstream stages that must be complete (those that run)
    optional_reads: tuple[str, ...] = ()  # upstream stages read where present (fingerprinted all the same)
    per_target: bool = False
    runs_when: str | None = None  # a RunConfig field that must be truthy for the stage to run
    iterative_keys: tuple[str, ...] = ()  # fields it depends on only with --iterative
    scorer_keys: bool = False  # also the fields the chosen scorer declares (Scorer.config_keys)
    fingerprint_extras: str | None = None  # "module:function(cfg) -> dict" of inputs beyond the config
    published: tuple[str, ...] = ()  # output roles copied to the run directory's root, where users look
    uses_device: bool = False  # runs PyTorch work on --device (recorded in its manifest)
    all_processes: bool = False  # under torchrun every process runs it (others: rank 0 alone, the rest wait)

    def keys_for(self, cfg) -> tuple[str, ...]:
        keys = self.config_keys + (self.iterative_keys if cfg.iterative else ())
        if self.scorer_keys:
            from pipeline.scorers import SCORERS

            keys += tuple(k for k in SCORERS.load(cfg.scorer).config_keys if k not in keys)
        return keys

    def runs(self, cfg) -> bool:
        return self.runs_when is None or bool(getattr(cfg, self.runs_when))

    def directory(self, run_dir: Path, target: str | None = None) -> Path:
        return Path(run_dir) / self.name / target if self.per_target and target else Path(run_dir) / self.name

    def file(self, run_dir: Path, role: str, target: str | None = None) -> Path:
        return self.directory(run_dir, target) / self.outputs[role]


STAGES = (
    StageSpec("calibrate", "pipeline.stages.calibrate:run",
              ("model", "model_args", "weights", "data", "input_shape", "mean", "std", "interpolation", "crop_pct",
               "keep_layers", "calib_samples", "eval_samples", "batch_size", "seed"),
              outputs={"groups": "groups.json", "stats": "stats.safetensors", "accuracy": "accuracy.json"},
              fingerprint_extras="pipeline.stages.calibrate:fingerprint_extras", uses_device=True),
    StageSpec("score", "pipeline.stages.score:run", ("scorer", "seed", "calib_samples", "batch_size"),
              outputs={"scores": "scores.safetensors", "table": "scores.csv", "budget": "budget.json", "notes": "notes.json"},
              reads=("calibrate",), scorer_keys=True, uses_device=True),
    StageSpec("prune", "pipeline.stages.prune:run",
              ("ratio", "macs_reduction", "speedup", "latency_ms", "latency_table", "budget", "round_to", "max_unit_ratio", "ranking", "allocate", "select", "compensate", "lstsq_ridge",
               "bn_recalibration", "targets", "precision", "calib_samples", "batch_size", "eval_samples", "iterative"),
              outputs={"plan": "plan.json", "weights": "model.safetensors", "metrics": "metrics.json",
                       "iterations": "iterations.json"},
              reads=("calibrate", "score"), iterative_keys=("max_acc_drop", *_TRAINING_KEYS), uses_device=True,
              fingerprint_extras="pipeline.stages.prune:fingerprint_extras"),
    StageSpec("distill", "pipeline.stages.distill:run", (*_TRAINING_KEYS, "batch_size", "eval_samples"),
              outputs={"weights": "model.safetensors", "history": "history.csv"}, reads=("prune",),
              runs_when="distill_epochs", uses_device=True, all_processes=True),
    StageSpec("export", "pipeline.stages.export:run", ("precision", "targets", "calib_samples", "eval_samples", "batch_size"),
              outputs={"dense": "dense.onnx", "pruned": "pruned.onnx", "parity": "parity.json", "reference": "reference.npz"},
              reads=("prune", "distill")),
    StageSpec("compile", "pipeline.stages.compile:run", ("precision", "batch_sizes", "input_shape"),
              outputs={"facts": "target.json"}, reads=("export",), per_target=True),
    StageSpec("profile", "pipeline.stages.profile:run", ("batch_sizes", "profile_seconds", "profile_trials", "threads"),
              outputs={"latency": "latency.json"}, reads=("export", "compile"), per_target=True),
    StageSpec("report", "pipeline.stages.report:run", ("min_efficiency",),
              outputs={"json": "report.json", "markdown": "report.md", "plots": "plots"},
              reads=("calibrate", "prune", "distill", "export"), optional_reads=("profile",),
              published=("json", "markdown", "plots")),
)  # fmt: skip
NAMES = tuple(spec.name for spec in STAGES)


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown stage '{name}'; stages: {', '.join(NAMES)}")


def artifact(run_dir: Path, name: str, role: str, target: str | None = None) -> Path:
    """The path of a stage's output: artifact(run_dir, "prune", "plan")."""
    return stage(name).file(run_dir, role, target)
