"""Per-layer times of a compiled model, matched to the model's conv and linear layers, and why a pruned
layer's time shrank less than its MACs.

The runtimes name their (fused) layers differently: OpenVINO keeps the ONNX node names, suffixed
(/a1/Conv/WithoutBiases), while ONNX Runtime's layout pass renames fused convs after tensors
(/Relu_output_0_nchwc: the output of the activation fused into the conv). A runtime node is matched to
an ONNX node by name where one is a prefix of it (or it is named after the node's output, or its fused
activation's), else by its weight shape, in execution order; ONNX Runtime's blocked layout pads a
conv's channels to its block (8 with AVX2, 16 with AVX-512), so a padded shape matches too. Everything
unmatched (element-wise layers, pooling, layout reorders) is summed as "other"."""

from __future__ import annotations

from pathlib import Path

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
RUNTIME_WEIGHTED_OPS = (*WEIGHTED_OPS, "FullyConnected")  # OpenVINO's name for a fused Gemm/MatMul
# activations a runtime fuses into the conv before them (and may name the fused layer after)
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")
LAYOUT_SUFFIXES = ("_nchwc",)  # ONNX Runtime's blocked-layout copies of a tensor
LARGEST_BLOCK = 16


def onnx_layers(onnx_path: Path) -> list[dict]:
    """The graph's conv and linear nodes in order: {"node", "module", "weight_shape"}; `module` is the PyTorch
    module the exporter named the node after (module_of)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        weight = next((shapes[i] for i in node.input[1:] if i in shapes), None)
        if weight is None:
            continue
        outputs = list(node.output)
        # a MatMul's bias Add is fused into the runtime's layer, which may be named after the Add's output
        for reader in readers.get(node.output[0], []) if node.op_type == "MatMul" else []:
            if reader.op_type == "Add" and any(i in shapes for i in reader.input):
                outputs += list(reader.output)
        following = readers.get(node.output[0], [])
        if len(following) == 1 and following[0].op_type in FUSED_ACTIVATIONS:
            outputs += list(following[0].output)
        found.append({"node": node.name, "module": module_of(node.name), "weight_shape": weight, "outputs": outputs})
    return found


def module_of(node_name: str) -> str:
    """The module a TorchScript-exported node belongs to: its scopes name each module relative to its
    container ("/features/features.1/conv/conv.0/conv.0.0/Conv" is features.1.conv.0.0)."""
    scopes = [p for p in node_name.split("/") if p][:-1]
    path: list[str] = []
    for scope in scopes:
        if path and scope.startswith(path[-1] + "."):
            path[-1] = scope  # the same container, one index deeper
        else:
            path.append(scope)
    return ".".join(path) or node_name


def match(times: dict[str, dict], layers: list[dict]) -> tuple[dict[str, float], float]:
    """({module: ms}, ms of everything else) from a runtime's per-node times and the graph's layers."""
    by_module: dict[str, float] = {}
    unmatched = list(layers)
    other = 0.0
    for name, entry in times.items():
        layer = _by_name(name, unmatched) or _by_weight(entry, unmatched)
        if layer is None:
            other += entry["ms"]
            continue
        unmatched.remove(layer)
        by_module[layer["module"]] = by_module.get(layer["module"], 0.0) + entry["ms"]
    return by_module, other


def _by_name(name: str, layers: list[dict]):
    # OpenVINO names a layer whose output is a graph output after that tensor (logits); TensorRT names a
    # fused layer after its nodes joined by " + "
    parts = [_without_layout_suffix(p) for p in name.split(" + ")]
    candidates = [
        l for l in layers
        if any(p == l["node"] or p.startswith(l["node"] + "/") or p in l["outputs"] for p in parts)
    ]  # fmt: skip
    return max(candidates, key=lambda l: len(l["node"]), default=None)


def _by_weight(entry: dict, layers: list[dict]):
    shapes = entry.get("input_shapes") or []
    if len(shapes) < 2 or not any(op.lower() in entry["op"].lower() for op in RUNTIME_WEIGHTED_OPS):
        return None
    weight = list(shapes[1])
    # a MatMul stores its weight as (in, out), a runtime's fully connected layer as (out, in)
    return next((l for l in layers if any(_padded(weight, s) for s in (l["weight_shape"], l["weight_shape"][::-1]))), None)


def _without_layout_suffix(name: str) -> str:
    return next((name[: -len(s)] for s in LAYOUT_SUFFIXES if name.endswith(s)), name)


def _padded(runtime: list[int], graph: list[int]) -> bool:
    """The runtime's weight shape is the graph's, a conv's two channel dims perhaps padded up to a block."""
    if runtime == graph:
        return True
    if len(runtime) != 4 or len(graph) != 4 or runtime[2:] != graph[2:]:
        return False
    return all(r == g or (g < r < g + LARGEST_BLOCK and r % 8 == 0) for r, g in zip(runtime[:2], graph[:2]))


def slowest_to_shrink(dense: dict, pruned: dict, macs: dict, limit: int = 10) -> list[dict]:
    """The layers whose time shrank least against their MACs: per layer its MACs and time kept, and the
    milliseconds it takes beyond a time proportional to its MACs; largest first. `macs`: {module: [dense, pruned]}."""
    rows = []
    for module, (dense_macs, pruned_macs) in macs.items():
        if module not in dense or module not in pruned or not dense_macs:
            continue
        macs_kept = pruned_macs / dense_macs
        rows.append({
            "layer": module, "macs_kept": macs_kept, "time_kept": pruned[module] / max(dense[module], 1e-9),
            "dense_ms": dense[module], "pruned_ms": pruned[module], "excess_ms": pruned[module] - dense[module] * macs_kept,
        })  # fmt: skip
    rows.sort(key=lambda r: r["excess_ms"], reverse=True)
    return [r for r in rows if r["excess_ms"] > 0][:limit]


def reason(row: dict, kind: str, kept_width: int | None, block: int) -> str:
    """Why this layer's time did not follow its MACs, from what is known about it."""
    if row["macs_kept"] >= 0.999:
        return "not pruned: its widths are unchanged"
    if kept_width is not None and kept_width % block:
        return f"padded: {kept_width} channels are computed as {-(-kept_width // block) * block} (channel block {block})"
    if kind == "depthwise":
        return "memory-bound: a depthwise conv's time follows the bytes it moves, which shrink only with its channels"
    if row["time_kept"] >= 0.95 and row["macs_kept"] >= 0.75:
        return "a small cut the kernel does not see: its time moves in steps of its own channel tiling"
    if row["time_kept"] > 0.8 or row["pruned_ms"] < 0.02:
        return "fixed per-layer cost: too little work left for the kernel's time to scale with it"
    return "the kernel's efficiency drops at the narrower width (fewer channel blocks to spread over threads)"
