"""The stages, in order. Each is `run(ctx)` in its own module; only the runner knows the order."""

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str
    path: str  # "module:function"
    config_keys: tuple[str, ...]  # the RunConfig fields its output depends on
    per_target: bool = False
    iterative_keys: tuple[str, ...] = ()  # fields it depends on only with --iterative
    scorer_keys: bool = False  # also the fields the chosen scorer declares (Scorer.config_keys)

    def keys_for(self, cfg) -> tuple[str, ...]:
        keys = self.config_keys + (self.iterative_keys if cfg.iterative else ())
        if self.scorer_keys:
            from pipeline.scorers import SCORERS

            keys += tuple(k for k in SCORERS.load(cfg.scorer).config_keys if k not in keys)
        return keys


STAGES = (
    StageSpec("calibrate", "pipeline.stages.calibrate:run",
              ("model", "weights", "data", "input_shape", "keep_layers", "calib_samples", "eval_samples", "batch_size", "seed")),
    StageSpec("score", "pipeline.stages.score:run", ("scorer", "seed", "calib_samples", "batch_size"), scorer_keys=True),
    StageSpec("prune", "pipeline.stages.prune:run",
              ("ratio", "macs_reduction", "round_to", "max_unit_ratio", "ranking", "compensate", "lstsq_ridge",
               "bn_recalibration", "targets", "precision", "calib_samples", "batch_size", "eval_samples", "iterative"),
              iterative_keys=("max_acc_drop", "distill_epochs", "distill_optimizer", "distill_lr", "distill_temperature",
                              "distill_alpha", "distill_samples", "regularize")),
    StageSpec("distill", "pipeline.stages.distill:run",
              ("distill_epochs", "distill_temperature", "distill_alpha", "distill_optimizer", "distill_lr", "distill_samples",
               "regularize", "batch_size", "eval_samples")),
    StageSpec("export", "pipeline.stages.export:run", ("precision", "targets", "calib_samples", "eval_samples", "batch_size")),
    StageSpec("compile", "pipeline.stages.compile:run", ("precision", "batch_sizes", "input_shape"), per_target=True),
    StageSpec("profile", "pipeline.stages.profile:run",
              ("batch_sizes", "profile_seconds", "profile_trials", "threads"), per_target=True),
    StageSpec("report", "pipeline.stages.report:run", ("min_efficiency",)),
)
