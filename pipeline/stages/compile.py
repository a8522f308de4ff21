"""compile (per target): the target's own format of dense.onnx and pruned.onnx (for --precision int8
their Q/DQ graphs in the target's activation flavour), after the target's readiness check of each."""

from __future__ import annotations

from exporters import TARGETS
from pipeline.core.artifacts import write_json
from pipeline.core.errors import PipelineError
from pipeline.core.log import info
from pipeline.stages.common import StageContext, input_shape
from pipeline.stages.export import int8_path


def source_onnx(ctx: StageContext, target, variant: str):
    """The exported graph this target compiles: fp32 ONNX, or the Q/DQ flavour its INT8 kernels want."""
    if ctx.cfg.precision == "int8":
        return int8_path(ctx.stage_dir("export"), variant, target.int8_activations)
    return ctx.input("export", variant)


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    target = TARGETS.load_class(ctx.target)()
    batches = (input_shape(cfg)[0], *[b for b in cfg.batch_sizes if b != input_shape(cfg)[0]])
    readiness = {}
    for variant in ("dense", "pruned"):
        findings = target.check(source_onnx(ctx, target, variant), cfg.precision)
        readiness[variant] = [str(f) for f in findings]
        for finding in findings:
            info(f"compile: {ctx.target} readiness of {variant}: {finding}")
        if not findings:
            info(f"compile: {ctx.target} readiness of {variant}: ready ({cfg.precision})")
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            raise PipelineError(f"{variant} graph not ready for {ctx.target}: {errors[0]}")
    facts = {}
    for variant in ("dense", "pruned"):
        out = ctx.out / variant
        out.mkdir()
        facts[variant] = target.compile(source_onnx(ctx, target, variant), out, cfg.precision, batches)
    write_json(ctx.output("facts"), {"target": ctx.target, **facts["pruned"], "dense": facts["dense"], "readiness": readiness})
    info(f"compile: {ctx.target} ({facts['pruned'].get('runtime')} {facts['pruned'].get('version')})")
