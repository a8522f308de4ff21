"""What a built TensorRT engine did with the pruned widths, read from its layer information (the
engine inspector's JSON or trtexec --exportLayerInfo, built with detailed profiling verbosity):
reformatting layers it inserted, and tensors stored in a vectorised format whose channel count is
not a multiple of the vector, i.e. padded ("conv layer3.1.conv1: 50 channels stored as channel %
8 == 0"). Both bring removed MACs and memory traffic back. Also each layer's time from TensorRT's
layer profiler (trtexec --exportProfile, or the IProfiler callback of the Python API).

TensorRT names a fused layer after the ONNX nodes it holds joined by " + " ("/conv1/Conv + /relu/Relu"),
which is how profiles.layers matches it to the model's layers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

_VECTOR = re.compile(r"channel % (\d+) == 0")


@dataclass
class LayerReport:
    layers: int = 0
    reformats: list[str] = field(default_factory=list)  # names of the reformatting layers
    padded: list[str] = field(default_factory=list)  # "<layer>: <C> channels stored as channel % <v> == 0"
    detailed: bool = True  # False when the engine was built without detailed verbosity (names only)

    def reasons(self, limit: int = 5) -> list[str]:
        """Lines for the verdict's reasons."""
        lines = []
        if self.reformats:
            lines.append(
                f"TensorRT inserted {len(self.reformats)} reformatting layer(s) in the pruned engine "
                f"(e.g. {self.reformats[0]}): layout conversions that cost time the dense engine may not pay"
            )
        lines += [f"{p}: padded back up, so the removed channels still cost" for p in self.padded[:limit]]
        if len(self.padded) > limit:
            lines.append(f"... and {len(self.padded) - limit} more padded tensors")
        return lines

    def to_dict(self) -> dict:
        return {"layers": self.layers, "reformats": self.reformats, "padded": self.padded, "detailed": self.detailed}


def analyse(info: dict | str | Path) -> LayerReport:
    """Parse layer information given as a dict, a JSON string, or a path to a JSON file."""
    info = _load(info)
    report = LayerReport()
    for layer in info.get("Layers", []):
        report.layers += 1
        if isinstance(layer, str):  # built without detailed verbosity: names only
            report.detailed = False
            if layer.startswith("Reformatting CopyNode"):
                report.reformats.append(layer)
            continue
        name = layer.get("Name", "?")
        if layer.get("LayerType") == "Reformat" or name.startswith("Reformatting CopyNode"):
            report.reformats.append(name)
            continue
        seen = set()
        for tensor in layer.get("Inputs", []) + layer.get("Outputs", []):
            padded = _padded(tensor)
            if padded and (tensor.get("Name"), padded) not in seen:
                seen.add((tensor.get("Name"), padded))
                report.padded.append(f"{layer.get('ParameterType', layer.get('LayerType', 'layer')).lower()} {name}: {padded}")
    return report


def _padded(tensor: dict) -> str | None:
    """'<C> channels stored as channel % <v> == 0' when the format pads C."""
    fmt = tensor.get("Format/Datatype", "")
    match = _VECTOR.search(fmt)
    dims = tensor.get("Dimensions") or []
    if not match or len(dims) < 2:
        return None
    vector, channels = int(match.group(1)), int(dims[1])
    if channels % vector == 0:
        return None
    return f"{channels} channels stored as channel % {vector} == 0"


def layer_kinds(info: dict | str | Path | None) -> dict[str, dict]:
    """{layer name: {"op", "input_shapes"}} from detailed layer information (empty without it)."""
    kinds = {}
    for layer in _load(info).get("Layers", []) if info is not None else []:
        if isinstance(layer, dict):
            kinds[layer.get("Name", "?")] = {
                "op": layer.get("ParameterType") or layer.get("LayerType", ""),
                "input_shapes": [t.get("Dimensions", []) for t in layer.get("Inputs", [])],
            }
    return kinds


def profile_times(profile: list | str | Path, info: dict | str | Path | None = None) -> dict[str, dict]:
    """Per-layer milliseconds per call, {layer: {"op", "ms", "input_shapes"}}, from trtexec's exported
    profile (its median where the version writes one, else its average); ops and input shapes from the
    engine's layer information where given."""
    kinds = layer_kinds(info)
    times = {}
    for row in _load(profile):
        if "name" not in row:  # the leading {"count": N}
            continue
        ms = row.get("medianMs", row.get("averageMs"))
        if ms is None:
            continue
        kind = kinds.get(row["name"], {"op": "", "input_shapes": []})
        times[row["name"]] = {"op": kind["op"], "ms": float(ms), "input_shapes": kind["input_shapes"]}
    return times


def callback_times(calls: dict[str, list[float]], runs: int, info: dict | str | Path | None = None) -> dict[str, dict]:
    """The same from the IProfiler callback's reports ({layer: [ms of each call]}): the median of the last
    `runs` calls of each layer (the warm-up calls before them left out)."""
    import statistics

    kinds = layer_kinds(info)
    return {
        name: {"op": kinds.get(name, {}).get("op", ""), "ms": float(statistics.median(values[-runs:])),
               "input_shapes": kinds.get(name, {}).get("input_shapes", [])}
        for name, values in calls.items() if values
    }  # fmt: skip


def _load(value: dict | list | str | Path):
    """JSON given parsed, as text, or as the path of a file."""
    if isinstance(value, (dict, list)):
        return value
    text = str(value) if not isinstance(value, Path) else ""
    return json.loads(text if text.lstrip().startswith(("{", "[")) else Path(value).read_text())
