"""The `pipeline` command: run, one command per stage, check, list, report.

Errors a user can cause print one line on stderr and exit non-zero; heavy libraries load only
inside the commands that need them, so --help and list answer fast."""

from __future__ import annotations

import sys

import click

from pipeline.core.errors import PipelineError
from pipeline.stages import NAMES, STAGES

STRICT_FAIL_EXIT = 3


class CleanErrors(click.Group):
    """Turns PipelineError into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PipelineError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="structured-pruning-pipeline", prog_name="pipeline")
def main():
    """Prune a trained classifier, export it, compile it per target and measure the real speedup.

    Stages: calibrate -> score -> prune -> [distill] -> export -> compile -> profile -> report."""


def _shape(ctx, param, value):
    if value is None:
        return None
    from pipeline.core.config import parse_shape

    try:
        return parse_shape(value)
    except PipelineError as err:
        raise click.BadParameter(str(err).split(": ", 1)[-1]) from None


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML recipe; flags override its keys.")
@click.option(
    "--model",
    help="torchvision:NAME | timm:NAME | cifar:resnet56 | package.module:factory | file.py:factory  "
    "[default: torchvision:resnet18]",
)
@click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument of the model's constructor (repeatable), e.g. drop_path_rate=0.1.",
)
@click.option(
    "--weights",
    help="Checkpoint: state dict (.pt/.pth/.th/.bin), training checkpoint (state_dict, "
    "state_dict_ema) or .safetensors; loaded with weights_only=True.",
)
@click.option(
    "--data",
    help="ImageFolder root with train/ and test/ (or val/), or package.module:factory | file.py:factory "
    "returning (train_dataset, eval_dataset); synthetic inputs without it.",
)
@click.option("--input-shape", callback=_shape, help="N,C,H,W  [default: the model's pretrained config, batch 1]")
@click.option("--mean", help="Normalisation mean per channel, e.g. 0.5,0.5,0.5  [default: the model's pretrained config]")
@click.option("--std", help="Normalisation std per channel  [default: the model's pretrained config]")
@click.option("--scorer", help="Criterion (see `pipeline list`)  [default: l1]")
@click.option("--ratio", type=float, help="Fraction of units removed per prunable group, in (0, 1)  [default: 0.5]")
@click.option("--macs-reduction", type=float, help="Reach dense MACs / pruned MACs = X (within 5%) instead of a ratio.")
@click.option(
    "--speedup",
    type=float,
    help="Reach dense latency / pruned latency = X on the first --target, measured there (within 5%), instead of a ratio.",
)
@click.option("--latency-ms", type=float, help="Reach this pruned latency (milliseconds) on the first --target instead.")
@click.option(
    "--latency-table",
    type=click.Path(dir_okay=False),
    help="Per-layer latencies measured elsewhere (`pipeline latency-table`)  [default: measured here and cached]",
)
@click.option("--round-to", type=int, help="Round kept widths to this multiple  [default: the targets' channel block]")
@click.option(
    "--ranking",
    type=click.Choice(["auto", "uniform", "global"]),
    help="Spread the budget uniformly over groups or by one global threshold  [default: the scorer's own]",
)
@click.option(
    "--allocate",
    type=click.Choice(["scores", "sensitivity"]),
    help="Per-group widths from the scores (--ranking) or from each group's measured sensitivity on "
    "calibration images, least in total within the budget  [default: scores]",
)
@click.option(
    "--select",
    type=click.Choice(["scores", "reconstruction"]),
    help="Which units go within a group: the lowest-scored, or those whose removal the least-squares re-fit "
    "rebuilds best on calibration images (needs --compensate lstsq)  [default: scores]",
)
@click.option(
    "--compensate",
    type=click.Choice(["auto", "none", "mean", "lstsq"]),
    help="Put back what removed units leave: mean-shift or least-squares re-fit  [default: the scorer's own, else none]",
)
@click.option(
    "--lstsq-ridge", type=float, help="Ridge of the least-squares re-fit, relative to the Gram diagonal  [default: 1e-3]"
)
@click.option(
    "--snip-at-init/--no-snip-at-init", default=None, help="SNIP: score a freshly initialised copy of the architecture."
)
@click.option("--keep-layers", multiple=True, help="Module-name pattern never pruned (repeatable), e.g. 'layer4.*'.")
@click.option("--no-bn-recalibration", "no_bn", is_flag=True, default=None, help="Skip BatchNorm re-estimation after removal.")
@click.option("--distill-epochs", type=int, help="Knowledge-distillation epochs after pruning  [default: 0]")
@click.option("--distill-optimizer", type=click.Choice(["sgd", "adamw"]), help="[default: sgd]")
@click.option("--distill-lr", type=float, help="[default: 0.01]")
@click.option("--train-samples", type=int, help="Training images per epoch of distillation  [default: the whole train split]")
@click.option("--distill-temperature", type=float, help="[default: 4]")
@click.option("--distill-alpha", type=float, help="Weight of the distillation term  [default: 0.9]")
@click.option(
    "--regularize",
    type=click.Choice(["none", "class-aware"]),
    help="Regulariser while fine-tuning: class-aware = L1 + kernel orthogonality (Class-Aware Pruning)",
)
@click.option(
    "--iterative/--one-shot",
    default=None,
    help="Prune at most 10%% of each group per step, fine-tune --distill-epochs between steps, stop at --max-acc-drop.",
)
@click.option("--max-acc-drop", type=float, help="Accuracy (fraction) an iterative step may lose against dense  [default: 0.005]")
@click.option("--target", "targets", multiple=True, help="cpu | openvino | tensorrt (repeatable)  [default: cpu]")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="fp16: OpenVINO FP16 IR, TensorRT FP16 (not on cpu); int8: Q/DQ graphs from calibration images  [default: fp32]",
)
@click.option("--batch-sizes", callback=_shape, help="Also profile these batch sizes, e.g. 1,8,32.")
@click.option("--profile-seconds", type=float, help="Timed seconds per model and batch size  [default: 2]")
@click.option("--threads", type=int, help="Runtime threads  [default: every core]")
@click.option("--min-efficiency", type=float, help="Efficiency a pass needs  [default: 0.5]")
@click.option("--out", help="Run directory  [default: runs/<model>-<scorer>-<budget>]")
@click.option("--calib-samples", type=int, help="Calibration images  [default: 1024]")
@click.option("--eval-samples", type=int, help="Evaluation images  [default: the whole eval split]")
@click.option(
    "--batch-size",
    type=int,
    help="Batch size of calibration, evaluation and distillation; per process under torchrun "
    "(global batch = this x processes)  [default: 64]",
)
@click.option("--seed", type=int, help="[default: 0]")
@click.option(
    "--device",
    help="Where the PyTorch stages compute: auto | cpu | cuda | cuda:N | mps; under torchrun each process "
    "takes cuda:LOCAL_RANK  [default: auto, CUDA when available]",
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    help="Mixed precision while distilling  [default: auto, bf16 on CUDA where supported, else off]",
)
@click.option(
    "--workers",
    type=int,
    help="DataLoader worker processes per process  [default: a share of the cores, none for small or in-memory data]",
)
@click.option(
    "--memory-budget",
    type=float,
    metavar="GB",
    help="Memory the run may use; a model whose weights and activations need more is refused before any stage  [default: what is available]",
)
@click.option(
    "--until",
    type=click.Choice([name for name in NAMES if name != "report"]),
    help="Stop after this stage.",
)
@click.option("--force", is_flag=True, help="Re-run every stage, even those whose inputs did not change.")
@click.option("--strict/--no-strict", default=None, help="Exit 3 when any target's verdict is fail.")
def run(config_file, no_bn, until, force, **options):
    """Run the whole pipeline (stages already done with the same inputs are skipped)."""
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    if no_bn:
        options["bn_recalibration"] = False
    options["targets"] = options["targets"] or None
    options["keep_layers"] = options["keep_layers"] or None
    options["model_args"] = options["model_args"] or None
    from pipeline.core.distributed import launched

    cfg = build_config(config_file, **options)
    run_dir = run_pipeline(cfg, force=force, until=until)
    process = launched()
    if until is None and (process is None or process.is_main):  # under torchrun rank 0 speaks for all
        _summarise(run_dir, cfg.strict)


def _summarise(run_dir, strict: bool) -> None:
    import json

    report = json.loads((run_dir / "report.json").read_text())
    click.echo(f"report: {run_dir / 'report.md'}")
    accuracy = report["pruned"]["accuracy"]
    click.echo(
        f"MACs {report['dense']['macs'] / 1e6:.1f}M -> {report['pruned']['macs'] / 1e6:.1f}M "
        f"({report['macs_ratio']:.2f}x)"
        + (f", accuracy {report['dense']['accuracy']:.4f} -> {accuracy:.4f}" if accuracy is not None else "")
    )
    failed = []
    for target, result in report["targets"].items():
        click.echo(
            f"{target:9s} {result['dense_ms']['p50']:8.2f} ms -> {result['pruned_ms']['p50']:8.2f} ms  speedup "
            f"{result['speedup']:.2f}x [{result['speedup_ci'][0]:.2f}, {result['speedup_ci'][1]:.2f}]  "
            f"efficiency {result['efficiency']:.2f}  {result['verdict'].upper()}"
        )
        for reason in result["reasons"]:
            click.echo(f"          - {reason}")
        if result["verdict"] == "fail":
            failed.append(target)
    if strict and failed:
        click.echo(f"Error: verdict fail on {', '.join(failed)} (--strict)", err=True)
        sys.exit(STRICT_FAIL_EXIT)


def _stage_command(name: str, per_target: bool):
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option("--force", is_flag=True, help="Re-run even when the inputs did not change.")
    def command(run_dir, force, target=None):
        from pathlib import Path

        from pipeline.runner import run_one_stage

        run_one_stage(Path(run_dir), name, target, force)

    command.__doc__ = f"Run the {name} stage on an existing run directory."
    if per_target:
        command = click.option("--target", help="Only this target  [default: the run's targets]")(command)
    return main.command(name)(command)


for _spec in STAGES:  # the report stage has its own command, which also prints the tables
    if _spec.name != "report":
        _stage_command(_spec.name, _spec.per_target)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir):
    """Rebuild report.json, report.md and plots of a run directory and print the tables."""
    from pathlib import Path

    from pipeline.runner import load_run_config, run_stage

    cfg = load_run_config(Path(run_dir))
    run_stage(cfg, Path(run_dir), "report", force=True)
    click.echo((Path(run_dir) / "report.md").read_text())


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--target", required=True, help="The target to check the graph for: tensorrt | cpu | openvino.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@click.option(
    "--trt-version", default=None, help="TensorRT version whose parser to check against  [default: the installed one, else 10]"
)
@click.option("--strict", is_flag=True, help="Warnings (e.g. unaligned channels) fail too.")
def check(onnx_file, target, precision, trt_version, strict):
    """Is ONNX_FILE ready for a target? No runtime needed: the rules are checked on the graph.

    Prints one line per finding (FAIL/WARN with the rule's name); exits 1 when a rule fails."""
    from pathlib import Path

    from exporters import TARGETS
    from pipeline.core.errors import ConfigError

    path = Path(onnx_file)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    target_class = TARGETS.load_class(target)
    try:
        if target == "tensorrt" and trt_version:
            from exporters import readiness

            findings = readiness.check(path, precision, trt_version)
        else:
            findings = target_class().check(path, precision)
    except PipelineError:
        raise
    except Exception as err:  # not an ONNX file, or a corrupt one
        raise ConfigError(f"{path} is not a readable ONNX model ({str(err).splitlines()[0][:120]})") from None
    for finding in findings:
        click.echo(str(finding))
    failed = [f for f in findings if f.severity == "error" or strict]
    if failed:
        click.echo(f"{path.name}: not ready for {target} ({len(failed)} finding(s) fail)", err=True)
        sys.exit(1)
    click.echo(f"{path.name}: ready for {target} ({precision}{', ' + str(len(findings)) + ' warning(s)' if findings else ''})")


@main.command("latency-table")
@click.option("--model", required=True, help="Model spec, as for `pipeline run`.")
@click.option(
    "--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Keyword argument of its constructor (repeatable)."
)
@click.option("--weights", help="Checkpoint (the widths matter, not the values).")
@click.option("--target", required=True, help="cpu | openvino | tensorrt: the runtime to measure on, here.")
@click.option("--input-shape", callback=_shape, help="N,C,H,W at the batch size to deploy  [default: the model's, batch 1]")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), help="[default: fp32]")
@click.option("--threads", type=int, help="Runtime threads  [default: every core]")
@click.option("--round-to", type=int, help="Widths measured on multiples of N  [default: the target's channel block]")
@click.option("--keep-layers", multiple=True, help="Module-name pattern never pruned (repeatable).")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Where to write the table (JSON).")
def latency_table(out_file, **options):
    """Measure a model's per-layer latency table on this machine's runtime, for `pipeline run --latency-table`
    elsewhere (e.g. measured on the edge device, used on the build host)."""
    from pathlib import Path

    from exporters import TARGETS
    from exporters.base import default_threads
    from pipeline.core.config import build_config
    from pipeline.latency import table as tables
    from pipeline.latency.layers import measurable_layers
    from pipeline.preflight import resolve
    from pipeline.pruning.analysis import analyse
    from pipeline.stages.common import dense_model, example_input

    options["targets"] = (options.pop("target"),)
    options["keep_layers"] = options["keep_layers"] or None
    options["model_args"] = options["model_args"] or None
    cfg = resolve(build_config(**options))
    target = TARGETS.load(cfg.targets[0])()
    model = dense_model(cfg).eval()
    round_to = cfg.round_to or target.block(cfg.precision)
    groups = analyse(model, example_input(cfg), cfg.keep_layers, keep_stem=False).groups  # as a latency budget's run has them
    layers = measurable_layers(model, example_input(cfg, batch=cfg.input_shape[0]), groups, round_to, cfg.max_unit_ratio)
    key = tables.TableKey(cfg.targets[0], target.runtime_version(), target.hardware(), cfg.precision, cfg.input_shape[0],
                          cfg.threads or default_threads())  # fmt: skip
    table, notes = tables.for_run(target, key, layers)
    table.save(Path(out_file))
    for note in notes:
        click.echo(note)
    click.echo(f"{out_file}: {len(table.entries)} layer shapes, {key.target} ({key.runtime}) on {key.hardware}")


@main.command("list")
def list_plugins():
    """Scorers, budget allocators, targets and model families, and why any of them cannot load here."""
    from exporters import TARGETS
    from pipeline.allocators import ALLOCATORS
    from pipeline.models import FAMILIES
    from pipeline.scorers import SCORERS

    registries = (("scorers", SCORERS), ("budget allocators", ALLOCATORS), ("targets", TARGETS), ("model families", FAMILIES))
    for title, registry in registries:
        click.echo(f"{title}:")
        for name in registry.names():
            reason = registry.unavailable_reason(name)
            status = f"  [unavailable: {reason}]" if reason else ""
            click.echo(f"  {name:12s} {registry.entry(name).summary}{status}")


if __name__ == "__main__":
    main()
