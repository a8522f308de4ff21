"""PyTorch -> ONNX: export with a dynamic batch axis, full checker, shape inference,
onnx-graphsurgeon clean-up and constant folding, and parity against PyTorch on ONNX Runtime."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import PipelineError

OPSET = 17
INPUT, OUTPUT = "input", "logits"


# A protobuf message cannot pass 2 GiB: above this many weight bytes the graph keeps its weights
# in one external file beside it (<name>.onnx.data), which every runtime here reads.
EXTERNAL_DATA_BYTES = 1_800_000_000


def export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = OPSET) -> None:
    import onnx
    import onnx_graphsurgeon as gs

    path = Path(path)
    model = model.eval()
    # torch writes a graph over 2 GiB as one file per weight: it goes to a scratch directory, and
    # only the cleaned graph (one file, or one file and its .data) lands beside `path`
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        raw = Path(scratch) / path.name
        with warnings.catch_warnings(), torch.no_grad():  # no autograd state: less memory while tracing
            warnings.simplefilter("ignore")
            # The TorchScript exporter writes opset 17 graphs that TensorRT, OpenVINO and ONNX
            # Runtime all parse without extra passes.
            torch.onnx.export(
                model,
                (example,),
                str(raw),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                do_constant_folding=True,
            )
        graph = gs.import_onnx(onnx.load(str(raw)))
        graph.fold_constants().cleanup().toposort()
        cleaned = gs.export_onnx(graph)
        del graph  # its weights are the loaded graph's: freed before the cleaned one is written
    save(cleaned, path)
    del cleaned
    onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise PipelineError(f"exported ONNX graph {path.name} fails onnx.checker: {str(err).splitlines()[0]}") from None


def save(model, path: Path) -> None:
    """Write `model` to `path`, its weights to `<path>.data` when they would not fit in one message."""
    import onnx

    path = Path(path)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    external = weight_bytes(model) > EXTERNAL_DATA_BYTES
    onnx.save(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True, location=data.name)


def weight_bytes(model) -> int:
    from onnx.helper import tensor_dtype_to_np_dtype

    return int(sum(np.prod(t.dims) * tensor_dtype_to_np_dtype(t.data_type).itemsize for t in model.graph.initializer))


def needs_external_data(path: Path) -> bool:
    """Whether the graph at `path` (or one made from it) keeps its weights beside it: past one message's limit."""
    return weight_bytes(load_structure(path)) > EXTERNAL_DATA_BYTES


def load_structure(path: Path):
    """The graph with its initializers' names, types and shapes but not their bytes: cheap for a
    graph of gigabytes; `tensor_values` reads one tensor's values when needed."""
    import onnx

    return onnx.load(str(path), load_external_data=False)


def tensor_values(tensor, path: Path) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor, base_dir=str(Path(path).parent))


def conv_output_channels(path: Path) -> int:
    """Sum of the output channels of every Conv node's weight: what physical removal shrinks."""
    model = load_structure(path)
    weights = {t.name: t for t in model.graph.initializer}
    return sum(
        int(weights[n.input[1]].dims[0])
        for n in model.graph.node
        if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in weights
    )


def weight_elements(path: Path) -> int:
    return int(sum(np.prod(t.dims) for t in load_structure(path).graph.initializer))


def ort_session(path: Path, threads: int | None = None, fuse: bool = True):
    """An ONNX Runtime CPU session. fuse=False stops at the basic graph optimisations, so a Q/DQ graph
    computes what its quantisation defines (quantise, dequantise, float op) instead of running ONNX
    Runtime's fused integer kernels, whose S8S8 path loses precision on x86 CPUs without VNNI (measured on
    an AVX2 EPYC, tiny ResNet: logits' SQNR 31.8 dB unfused, 13.3 dB fused)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not fuse:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


OUTPUT_CHUNK_ELEMENTS = 1 << 22  # input elements per forward: 27 images at 224 pixels, 3 at 600


def outputs(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """PyTorch's outputs on `inputs`, a few images per forward pass (a 600-pixel EfficientNet holds
    gigabytes of activations per image)."""
    rows = max(1, OUTPUT_CHUNK_ELEMENTS // max(inputs[:1].numel(), 1))
    with torch.no_grad():
        return torch.cat([model.eval()(part) for part in inputs.split(rows)]).numpy()


def _sqnr_db(expected: np.ndarray, actual: np.ndarray) -> float:
    noise = float(np.square(actual.astype(np.float64) - expected).sum())
    signal = float(np.square(expected.astype(np.float64)).sum())
    if noise == 0:
        return 300.0  # exact; still a finite JSON number
    return round(min(300.0, 10 * math.log10(max(signal, 1e-30) / noise)), 2)


def parity(expected: np.ndarray, path: Path, inputs: torch.Tensor, fuse: bool = True) -> dict:
    """Max absolute and relative error of ONNX Runtime against PyTorch's `expected` outputs on `inputs`, their
    signal-to-noise ratio in dB (the quantisation literature's SQNR; unlike top-1 agreement it does not hinge
    on near-tied logits) and top-1 agreement. `fuse` as in ort_session."""
    actual = ort_session(path, fuse=fuse).run(None, {INPUT: inputs.numpy()})[0]
    if actual.shape != expected.shape:
        raise PipelineError(f"{Path(path).name}: ONNX output shape {actual.shape} differs from PyTorch {expected.shape}")
    diff = np.abs(actual - expected)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float((diff / (np.abs(expected) + 1e-7)).max()),
        "reference_max_abs": float(np.abs(expected).max()),
        "sqnr_db": _sqnr_db(expected, actual),
        "top1_agreement": float((actual.argmax(1) == expected.argmax(1)).mean()),
        "samples": int(inputs.shape[0]),
    }
