"""PyTorch -> ONNX: export with a dynamic batch axis, full checker, shape inference,
onnx-graphsurgeon clean-up and constant folding, and parity against PyTorch on ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import PipelineError

OPSET = 17
INPUT, OUTPUT = "input", "logits"


def export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = OPSET) -> None:
    import onnx
    import onnx_graphsurgeon as gs

    path = Path(path)
    model = model.eval()
    with warnings.catch_warnings(), torch.no_grad():  # no autograd state: less memory while tracing
        warnings.simplefilter("ignore")
        # The TorchScript exporter writes one self-contained file with opset 17 and is the one
        # TensorRT, OpenVINO and ONNX Runtime all parse without extra passes.
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            do_constant_folding=True,
        )
    graph = gs.import_onnx(onnx.load(str(path)))
    graph.fold_constants().cleanup().toposort()
    onnx.save(gs.export_onnx(graph), str(path))
    del graph  # one copy of the weights at a time: shape inference works file to file
    onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise PipelineError(f"exported ONNX graph {path.name} fails onnx.checker: {str(err).splitlines()[0]}") from None


def conv_output_channels(path: Path) -> int:
    """Sum of the output channels of every Conv node's weight: what physical removal shrinks."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = {t.name: t for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            total += int(numpy_helper.to_array(weights[node.input[1]]).shape[0])
    return total


def weight_elements(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def ort_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(model: torch.nn.Module, path: Path, inputs: torch.Tensor) -> dict:
    """Max absolute and relative error of ONNX Runtime against PyTorch on the same inputs."""
    with torch.no_grad():
        expected = model.eval()(inputs).numpy()
    actual = ort_session(path).run(None, {INPUT: inputs.numpy()})[0]
    if actual.shape != expected.shape:
        raise PipelineError(f"{Path(path).name}: ONNX output shape {actual.shape} differs from PyTorch {expected.shape}")
    diff = np.abs(actual - expected)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float((diff / (np.abs(expected) + 1e-7)).max()),
        "reference_max_abs": float(np.abs(expected).max()),
        "top1_agreement": float((actual.argmax(1) == expected.argmax(1)).mean()),
        "samples": int(inputs.shape[0]),
    }
