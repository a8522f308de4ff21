"""Will this ONNX graph build into a fast TensorRT engine? Checked from the graph alone, so it works
on any machine (`pipeline check --target tensorrt MODEL.onnx`) and runs before every TensorRT build.

Rules, each named in its findings:
  supported-ops    every node's operator is one the TensorRT ONNX parser of that version imports
  opset            the default-domain opset is in the parser's range
  int64-weights    no INT64 initializer holds a value outside INT32 (TensorRT 8 casts INT64 down)
  dynamic-dims     only the batch axis of an input is dynamic (the optimisation profile covers it)
  channel-alignment  conv channel counts are multiples of the precision's vector width (a warning:
                   the engine is correct but pads the channels back, so the removed MACs return)

Facts per version are the onnx-tensorrt operator support matrix (docs/operators.md of the 8.6 and
10.x releases) and NvInferRuntime.h's tensor formats (kHWC8 for FP16, kCHW32 for INT8)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The operators the parser rejects ("N" in its support matrix); anything outside the default ONNX
# domain needs a plugin and is rejected too.
_UNSUPPORTED_10 = frozenset(
    """
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Col2Im CenterCropPad
Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder
MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt
SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split()
)
_UNSUPPORTED_8 = _UNSUPPORTED_10 | frozenset(
    """
Hardmax IsInf MeanVarianceNormalization Mod NonZero OneHot RandomNormal RandomNormalLike Reciprocal RoiAlign
Shrink
""".split()
)


@dataclass(frozen=True)
class ParserFacts:
    opset: tuple[int, int]
    unsupported: frozenset[str]
    casts_int64: bool  # INT64 tensors are cast down to INT32 (clamped)


VERSIONS = {
    "8.6": ParserFacts((7, 17), _UNSUPPORTED_8, True),
    "10": ParserFacts((9, 20), _UNSUPPORTED_10, False),
}
DEFAULT_VERSION = "10"
CHANNEL_BLOCK = {"fp32": 4, "fp16": 8, "int8": 32}  # TF32 tensor cores, kHWC8, kCHW32
INT32_RANGE = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # "error" (the build fails or computes something else) | "warning" (it runs slower)
    message: str

    def __str__(self) -> str:
        return f"{'FAIL' if self.severity == 'error' else 'WARN'} {self.rule}: {self.message}"


def version_facts(version: str) -> ParserFacts:
    major = version.split(".")[0]
    key = version if version in VERSIONS else ("10" if major.isdigit() and int(major) >= 10 else "8.6" if major == "8" else None)
    if key is None:
        from pipeline.core.errors import ConfigError

        raise ConfigError(f"no TensorRT parser facts for version {version}; known: 8.6, 10 (and later 10.x/11.x)")
    return VERSIONS[key]


def check(path: Path, precision: str = "fp32", version: str = DEFAULT_VERSION, batch_axis_dynamic: bool = True) -> list[Finding]:
    """Every finding for the graph at `path`; an empty list means ready."""
    from exporters.onnx import load_structure

    model = load_structure(path)
    facts = version_facts(version)
    findings: list[Finding] = []
    findings += _operators(model, facts, version)
    findings += _opset(model, facts, version)
    findings += _int64(model, facts, path)
    findings += _dynamic_dims(model, batch_axis_dynamic)
    findings += _alignment(model, precision)
    return findings


def _operators(model, facts: ParserFacts, version: str) -> list[Finding]:
    findings = []
    for node in _all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            findings.append(
                Finding(
                    "supported-ops",
                    "error",
                    f"node '{node.name}' ({node.domain}::{node.op_type}) is outside the "
                    f"ONNX domain: TensorRT {version} needs a plugin for it",
                )
            )
        elif node.op_type in facts.unsupported:
            findings.append(
                Finding(
                    "supported-ops",
                    "error",
                    f"node '{node.name}' ({node.op_type}) is not supported by the TensorRT {version} ONNX parser",
                )
            )
    return findings


def _opset(model, facts: ParserFacts, version: str) -> list[Finding]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    low, high = facts.opset
    if opset is None or not low <= opset <= high:
        return [
            Finding(
                "opset",
                "error",
                f"opset {opset} is outside the TensorRT {version} parser's range {low}-{high}; "
                f"re-export with opset_version in that range",
            )
        ]
    return []


def _int64(model, facts: ParserFacts, path: Path) -> list[Finding]:
    import numpy as np
    from onnx import TensorProto

    from exporters.onnx import tensor_values

    findings = []
    for tensor in model.graph.initializer:
        if tensor.data_type != TensorProto.INT64:
            continue
        values = tensor_values(tensor, path)
        if values.size and (values.min() < INT32_RANGE[0] or values.max() > INT32_RANGE[1]) and facts.casts_int64:
            findings.append(
                Finding(
                    "int64-weights",
                    "error",
                    f"INT64 initializer '{tensor.name}' holds values outside INT32 "
                    f"(e.g. {int(values.flat[np.abs(values).argmax()])}); TensorRT would "
                    f"clamp them when casting to INT32",
                )
            )
    return findings


def _dynamic_dims(model, batch_axis_dynamic: bool) -> list[Finding]:
    findings = []
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            dynamic = dim.HasField("dim_param") or not dim.HasField("dim_value") or dim.dim_value <= 0
            if dynamic and not (axis == 0 and batch_axis_dynamic):
                name = dim.dim_param or "?"
                findings.append(
                    Finding(
                        "dynamic-dims",
                        "error",
                        f"input '{value.name}' axis {axis} is dynamic ('{name}'); the "
                        f"optimisation profile covers the batch axis only: export "
                        f"with a fixed size there",
                    )
                )
    return findings


def _alignment(model, precision: str) -> list[Finding]:
    """Conv output and input channel counts that the precision's format pads; the first conv's image
    channels are exempt (TensorRT pads 3 to 4 at the input, which costs nothing that matters)."""
    block = CHANNEL_BLOCK[precision]
    weights = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    graph_inputs = {v.name for v in model.graph.input}
    unaligned = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        weight = _weight_of(node.input[1], weights, producers)
        if weight is None:
            continue
        shape = tuple(weight.dims)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_channels, in_channels = shape[0], shape[1] * group
        reads_image = _reads_graph_input(node.input[0], producers, graph_inputs)
        bad = [f"{out_channels} out"] if out_channels % block else []
        if in_channels % block and not reads_image:
            bad.append(f"{in_channels} in")
        if bad:
            unaligned.append(f"{node.name or node.output[0]} ({', '.join(bad)})")
    if not unaligned:
        return []
    shown = ", ".join(unaligned[:5]) + (f", and {len(unaligned) - 5} more" if len(unaligned) > 5 else "")
    return [
        Finding(
            "channel-alignment",
            "warning",
            f"{len(unaligned)} conv(s) with channel counts that are not multiples of "
            f"{block} ({precision}): {shown}; TensorRT pads them to {block}, so the "
            f"removed MACs come back (prune with --round-to {block})",
        )
    ]


def _weight_of(name: str, weights: dict, producers: dict):
    """The initializer behind a conv weight, through a DequantizeLinear of a QDQ graph."""
    if name in weights:
        return weights[name]
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in weights:
        return weights[node.input[0]]
    return None


def _reads_graph_input(name: str, producers: dict, graph_inputs: set[str]) -> bool:
    """The tensor is a graph input, possibly through Quantize/DequantizeLinear (QDQ graphs)."""
    while name not in graph_inputs:
        node = producers.get(name)
        if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            return False
        name = node.input[0]
    return True


def _all_nodes(graph):
    """Nodes of the graph and of every subgraph (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _all_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _all_nodes(sub)
