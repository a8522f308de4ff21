"""compile (per target): the target's own format of dense.onnx and pruned.onnx."""

from __future__ import annotations

from exporters import TARGETS
from pipeline.core.artifacts import write_json
from pipeline.core.log import info
from pipeline.stages.common import StageContext


def run(ctx: StageContext) -> None:
    target = TARGETS.load(ctx.target)()
    facts = {}
    for variant in ("dense", "pruned"):
        out = ctx.out / variant
        out.mkdir()
        facts[variant] = target.compile(ctx.stage_dir("export") / f"{variant}.onnx", out, ctx.cfg.precision)
    write_json(ctx.out / "target.json", {"target": ctx.target, **facts["pruned"]})
    info(f"compile: {ctx.target} ({facts['pruned'].get('runtime')} {facts['pruned'].get('version')})")
