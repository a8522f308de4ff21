"""export: dense and pruned models to ONNX (opset 17, dynamic batch), checked, cleaned, with a check
that the pruned graph really shrank and ONNX Runtime parity against PyTorch in parity.json. With
--precision int8 also their Q/DQ graphs (<variant>.int8-<s8|u8>.onnx, exporters.quantize), whose agreement
with PyTorch and, with --data, accuracy on the eval split are the real check of the quantisation."""

from __future__ import annotations

import gc

import numpy as np
import torch

from exporters import onnx as onnx_export
from pipeline.core.artifacts import write_json
from pipeline.core.errors import PipelineError
from pipeline.core.log import info
from pipeline.data.loaders import calibration_loader
from pipeline.models.hooks import forward_once
from pipeline.stages.common import (
    StageContext,
    data_spec,
    dense_model,
    example_input,
    final_model_stage,
    input_shape,
    pruned_model,
)

PARITY_SAMPLES = 16


def reference_inputs(cfg, count: int) -> torch.Tensor:
    batches = [x for x, _ in calibration_loader(data_spec(cfg), count, count, cfg.seed + 101)]
    return torch.cat(batches)[:count]


def conv_channels(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Output channels of the convolutions ONNX writes as Conv nodes: 1-D ones too (ECA attention), not
    transposed ones, and a module the forward calls several times (a shared position encoding) once per call."""
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]
    calls: dict[int, int] = {}
    handles = [m.register_forward_pre_hook(lambda m, args: calls.update({id(m): calls.get(id(m), 0) + 1})) for m in convs]
    forward_once(model, example, handles)
    return sum(m.out_channels * calls.get(id(m), 0) for m in convs)


def check_shrunk(dense_path, pruned_path, expected_channels: int) -> dict:
    dense_weights, pruned_weights = onnx_export.weight_elements(dense_path), onnx_export.weight_elements(pruned_path)
    found_channels = onnx_export.conv_output_channels(pruned_path)
    if expected_channels and found_channels != expected_channels:
        raise PipelineError(
            f"pruned.onnx has {found_channels} conv output channels, the pruned model {expected_channels}: the export did not keep the removal"
        )
    if pruned_weights >= dense_weights:
        raise PipelineError("pruned.onnx is not smaller than dense.onnx: nothing was removed (raise --ratio?)")
    return {
        "dense_weight_elements": dense_weights,
        "pruned_weight_elements": pruned_weights,
        "pruned_conv_channels": found_channels,
        "weights_ratio": dense_weights / max(pruned_weights, 1),
    }


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    source = final_model_stage(ctx.run_dir)
    inputs = reference_inputs(cfg, PARITY_SAMPLES)
    batch = input_shape(cfg)[0]  # reference outputs at the profiled batch size, for each target's parity check
    example = example_input(cfg)
    feed = reference_inputs(cfg, batch) if batch <= 256 else example.repeat(batch, 1, 1, 1)
    expected, references = {}, {"input": feed.numpy()}
    # one model at a time: a big model's export holds several copies of its weights
    for variant in ("dense", "pruned"):
        model = dense_model(cfg) if variant == "dense" else pruned_model(cfg, ctx.run_dir, source=source)
        onnx_export.export(model, example, ctx.output(variant))
        expected[variant] = onnx_export.outputs(model, inputs)
        references[variant] = onnx_export.outputs(model, feed)
        if variant == "pruned":
            channels = conv_channels(model, example)
        del model
        gc.collect()
    shrink = check_shrunk(ctx.output("dense"), ctx.output("pruned"), channels)
    parity = {variant: onnx_export.parity(expected[variant], ctx.output(variant), inputs) for variant in expected}
    for name, result in parity.items():
        if result["max_abs"] > 1e-3 * max(1.0, result["reference_max_abs"]):
            raise PipelineError(f"{name}.onnx differs from PyTorch by {result['max_abs']:.2e} (max abs): the export is wrong")
    if cfg.precision == "int8":
        parity["int8"] = quantize_both(cfg, ctx.out, expected, inputs)
    write_json(ctx.output("parity"), {**parity, "shrink": shrink, "source": source})
    np.savez(ctx.output("reference"), **references)
    info(f"export: weights {shrink['weights_ratio']:.2f}x smaller, parity max abs {parity['pruned']['max_abs']:.1e}")


def int8_path(out, variant: str, flavour: str):
    return out / f"{variant}.int8-{flavour}.onnx"


def quantize_both(cfg, out, expected: dict, inputs: torch.Tensor) -> dict:
    """Q/DQ graphs of both variants, in each activation flavour the targets want, from the same
    calibration images; their parity with PyTorch's `expected` outputs on `inputs` and accuracy:
    {flavour: {variant: facts}}."""
    from exporters import TARGETS
    from exporters.quantize import CALIBRATION_IMAGES, to_qdq

    calibration = reference_inputs(cfg, min(cfg.calib_samples, CALIBRATION_IMAGES)).numpy()
    result: dict[str, dict] = {}
    for flavour in sorted({TARGETS.load_class(t).int8_activations for t in cfg.targets}):
        for variant, outputs in expected.items():
            path = int8_path(out, variant, flavour)
            facts = to_qdq(out / f"{variant}.onnx", path, calibration, flavour)
            result.setdefault(flavour, {})[variant] = {
                **facts,
                # the graph's own numerics: each target measures its kernels on it when it compiles
                **onnx_export.parity(outputs, path, inputs, fuse=False),
                "accuracy": onnx_accuracy(cfg, path, fuse=False),
            }
        pruned = result[flavour]["pruned"]
        info(
            f"export: int8 ({flavour}) Q/DQ top-1 agreement with fp32 PyTorch {pruned['top1_agreement']:.2f}"
            + (
                f", accuracy dense {result[flavour]['dense']['accuracy']:.4f} pruned {pruned['accuracy']:.4f}"
                if pruned["accuracy"] is not None
                else ""
            )
        )
    return result


def onnx_accuracy(cfg, path, fuse: bool = True) -> float | None:
    """Top-1 accuracy of an ONNX graph on the eval split through ONNX Runtime; None without data."""
    from pipeline.data.loaders import eval_loader

    loader = eval_loader(data_spec(cfg), cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers)
    if loader is None:
        return None
    session = onnx_export.ort_session(path, fuse=fuse)
    correct = total = 0
    for images, labels in loader:
        logits = session.run(None, {onnx_export.INPUT: images.numpy()})[0]
        correct += int((logits.argmax(1) == labels.numpy()).sum())
        total += int(labels.numel())
    return correct / max(total, 1)
