"""trtexec command lines per TensorRT version, and the parsers of its output, on samples written in
its documented formats. Nothing here needs TensorRT."""

import json
from pathlib import Path

import pytest

from exporters import trt_layers, trtexec

V86, V103, V111 = (8, 6, 1), (10, 3, 0), (11, 1, 0)
SHAPES = ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))


@pytest.mark.parametrize(
    "banner, version",
    [
        ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --help", (8, 6, 1)),
        ("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec", (10, 3, 0)),
        ("[TensorRT v110100]", (11, 1, 0)),
        ("no banner here", None),
    ],
)
def test_version_from_the_banner(banner, version):
    assert trtexec.parse_version(banner) == version


def _build(precision, version):
    return trtexec.build_command(
        Path("m.onnx"), Path("m.engine"), "input", SHAPES, precision, Path("t.cache"), Path("l.json"), version
    )


def test_build_command_has_the_profile_cache_and_layer_info():
    command = _build("fp16", V103)
    assert command[0] == "trtexec" and "--onnx=m.onnx" in command and "--saveEngine=m.engine" in command
    assert "--minShapes=input:1x3x224x224" in command and "--optShapes=input:8x3x224x224" in command
    assert "--maxShapes=input:32x3x224x224" in command and "--timingCacheFile=t.cache" in command
    assert "--profilingVerbosity=detailed" in command and "--exportLayerInfo=l.json" in command
    assert "--fp16" in command and "--int8" not in command and "--skipInference" in command


@pytest.mark.parametrize(
    "precision, present, absent",
    [
        ("fp32", ["--noTF32"], ["--fp16", "--int8"]),
        ("fp16", ["--fp16"], ["--int8", "--noTF32"]),
        ("int8", ["--int8", "--fp16"], ["--noTF32"]),
    ],
)
def test_build_flags_follow_the_precision(precision, present, absent):
    command = _build(precision, V103)
    assert all(flag in command for flag in present) and not any(flag in command for flag in absent)


def test_old_trtexec_builds_without_inference_differently():
    assert "--buildOnly" in _build("fp32", (8, 2, 1)) and "--skipInference" in _build("fp32", V86)


@pytest.mark.parametrize("version, explicit", [(V86, True), (V103, True), (V111, False)])
def test_profile_flags_per_version(version, explicit):
    command = trtexec.profile_command(Path("m.engine"), "input", (1, 3, 224, 224), 3.0, Path("times.json"), version)
    stable = {"--useCudaGraph", "--noDataTransfers", "--useSpinWait"}
    # before 11.0 these are off unless asked for; from 11.0 they are the default and the flags are no-ops
    assert (stable <= set(command)) == explicit and (not explicit) == stable.isdisjoint(command)
    assert "--loadEngine=m.engine" in command and "--shapes=input:1x3x224x224" in command
    assert "--exportTimes=times.json" in command and "--duration=3" in command and "--percentile=50,90,99" in command


SUMMARY = """[11/23/2026-08:00:01] [I] === Performance summary ===
[11/23/2026-08:00:01] [I] Throughput: 1843.21 qps
[11/23/2026-08:00:01] [I] Latency: min = 0.5286 ms, max = 0.7371 ms, mean = 0.5407 ms, median = 0.5391 ms, percentile(90%) = 0.5459 ms, percentile(95%) = 0.5493 ms, percentile(99%) = 0.5676 ms
[11/23/2026-08:00:01] [I] GPU Compute Time: min = 0.5151 ms, max = 0.7224 ms, mean = 0.5262 ms, median = 0.5245 ms, percentile(90%) = 0.5312 ms, percentile(95%) = 0.5347 ms, percentile(99%) = 0.5528 ms
[11/23/2026-08:00:01] [I] Total GPU Compute Time: 2.99 s
"""


def test_compute_time_summary():
    stats = trtexec.parse_compute_summary(SUMMARY)
    assert stats == {"min": 0.5151, "max": 0.7224, "mean": 0.5262, "median": 0.5245, "p90": 0.5312, "p95": 0.5347, "p99": 0.5528}
    assert trtexec.parse_compute_summary("nothing timed") == {}


def test_exported_times_give_gpu_compute_seconds(tmp_path):
    records = [
        {
            "startEnqMs": 1.0,
            "endEnqMs": 1.1,
            "startComputeMs": 1.2,
            "endComputeMs": 1.7,
            "startD2hMs": 1.7,
            "endD2hMs": 1.7,
            "latencyMs": 0.52,
            "enqueueMs": 0.1,
            "h2dMs": 0.0,
            "computeMs": 0.5,
            "d2hMs": 0.0,
        },
        {"startEnqMs": 2.0, "latencyMs": 0.61, "computeMs": 0.6},
    ]
    path = tmp_path / "times.json"
    path.write_text(json.dumps(records))
    assert trtexec.read_times(path) == pytest.approx([0.0005, 0.0006])


def test_exported_outputs(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps([{"name": "logits", "dimensions": "1x3", "values": [0.1, 0.2, 0.7]}]))
    assert trtexec.read_outputs(path) == {"logits": [0.1, 0.2, 0.7]}


LAYER_INFO = {
    "Layers": [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv + /relu/Relu",
            "LayerType": "Reformat",
            "Inputs": [
                {
                    "Name": "input",
                    "Location": "Device",
                    "Dimensions": [1, 3, 224, 224],
                    "Format/Datatype": "Row major linear FP32",
                }
            ],
            "Outputs": [
                {
                    "Name": "Reformatted Input Tensor 0",
                    "Location": "Device",
                    "Dimensions": [1, 3, 224, 224],
                    "Format/Datatype": "Channel major FP16 format where channel % 8 == 0",
                }
            ],
            "ParameterType": "Reformat",
        },
        {
            "Name": "/layer3.1/conv1/Conv + /layer3.1/relu/Relu",
            "LayerType": "CaskConvolution",
            "ParameterType": "Convolution",
            "Inputs": [
                {
                    "Name": "a",
                    "Location": "Device",
                    "Dimensions": [1, 64, 14, 14],
                    "Format/Datatype": "Channel major FP16 format where channel % 8 == 0",
                }
            ],
            "Outputs": [
                {
                    "Name": "b",
                    "Location": "Device",
                    "Dimensions": [1, 50, 14, 14],
                    "Format/Datatype": "Channel major FP16 format where channel % 8 == 0",
                }
            ],
        },
        {
            "Name": "/fc/Gemm",
            "LayerType": "CaskGemm",
            "ParameterType": "FullyConnected",
            "Inputs": [{"Name": "c", "Dimensions": [1, 512], "Format/Datatype": "Row major linear FP16 format"}],
            "Outputs": [],
        },
    ],
    "Bindings": ["input", "logits"],
}


def test_layer_info_finds_reformats_and_padded_channels(tmp_path):
    report = trt_layers.analyse(LAYER_INFO)
    assert report.layers == 3 and len(report.reformats) == 1 and report.detailed
    assert report.padded == ["convolution /layer3.1/conv1/Conv + /layer3.1/relu/Relu: 50 channels stored as channel % 8 == 0"]
    reasons = report.reasons()
    assert "1 reformatting layer" in reasons[0] and "50 channels stored as channel % 8 == 0" in reasons[1]
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(LAYER_INFO))
    assert trt_layers.analyse(path).to_dict() == report.to_dict()


def test_layer_info_without_detailed_verbosity_still_counts_reformats():
    report = trt_layers.analyse(
        {"Layers": ["conv1 + relu", "Reformatting CopyNode for Output Tensor 0 to pool", "pool"], "Bindings": ["x", "y"]}
    )
    assert report.layers == 3 and report.reformats == ["Reformatting CopyNode for Output Tensor 0 to pool"]
    assert not report.detailed and report.padded == []


# trtexec --exportProfile: a count, then one row per (fused) layer; medianMs since TensorRT 8.6 only
PROFILE = [
    {"count": 20},
    {"name": "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv + /relu/Relu", "timeMs": 0.4, "averageMs": 0.02,
     "medianMs": 0.02, "percentage": 5.0},
    {"name": "/layer3.1/conv1/Conv + /layer3.1/relu/Relu", "timeMs": 4.2, "averageMs": 0.21, "medianMs": 0.19,
     "percentage": 70.0},
    {"name": "/fc/Gemm", "timeMs": 1.0, "averageMs": 0.05, "percentage": 25.0},
]  # fmt: skip


def test_layer_profile_gives_each_layers_time_per_call_with_its_kind(tmp_path):
    times = trt_layers.profile_times(PROFILE, LAYER_INFO)
    assert set(times) == {row["name"] for row in PROFILE[1:]}
    conv = times["/layer3.1/conv1/Conv + /layer3.1/relu/Relu"]
    assert conv == {"op": "Convolution", "ms": 0.19, "input_shapes": [[1, 64, 14, 14]]}  # the median where written
    assert times["/fc/Gemm"]["ms"] == 0.05 and times["/fc/Gemm"]["op"] == "FullyConnected"  # else the average
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE))
    assert trt_layers.profile_times(path) == {n: {**t, "op": "", "input_shapes": []} for n, t in times.items()}


def test_profiler_callbacks_give_the_median_of_the_last_calls():
    calls = {"/fc/Gemm": [9.0, 9.0, 0.1, 0.3, 0.2], "/conv1/Conv + /relu/Relu": [5.0, 1.0, 1.0, 2.0]}
    times = trt_layers.callback_times(calls, runs=3, info=LAYER_INFO)
    assert times["/fc/Gemm"] == {"op": "FullyConnected", "ms": 0.2, "input_shapes": [[1, 512]]}
    assert times["/conv1/Conv + /relu/Relu"]["ms"] == 1.0  # not in the layer information: no kind


def test_fused_tensorrt_layers_are_matched_to_the_model_layers_they_hold():
    from profiles.layers import match

    layers = [
        {"node": "/layer3.1/conv1/Conv", "module": "layer3.1.conv1", "weight_shape": [50, 64, 3, 3], "outputs": ["a"]},
        {"node": "/fc/Gemm", "module": "fc", "weight_shape": [10, 512], "outputs": ["logits"]},
    ]
    by_module, other = match(trt_layers.profile_times(PROFILE, LAYER_INFO), layers)
    assert by_module == {"layer3.1.conv1": 0.19, "fc": 0.05} and other == pytest.approx(0.02)


def test_layer_profile_command_runs_the_engine_with_the_profiler_exported():
    command = trtexec.layer_profile_command(Path("m.engine"), "input", (8, 3, 224, 224), 50, Path("p.json"))
    assert command[0] == "trtexec" and "--loadEngine=m.engine" in command and "--shapes=input:8x3x224x224" in command
    assert "--iterations=50" in command and "--exportProfile=p.json" in command and "--duration=0" in command
