"""Every registered target, run for real: compile dense ONNX, open a session, match PyTorch."""

import numpy as np
import pytest
import torch

from exporters import TARGETS
from exporters import onnx as onnx_export
from pipeline.core.errors import ConfigError
from pipeline.models.build import build_model
from tests.tiny_models import TINY_SPECS


def _available(name):
    reason = TARGETS.unavailable_reason(name)
    if reason:
        pytest.skip(f"target {name}: {reason}")
    return TARGETS.load(name)()


@pytest.mark.parametrize("target_name", TARGETS.names())
@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_target_compiles_and_runs_like_pytorch(target_name, kind, tmp_path):
    target = _available(target_name)
    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind]).eval()
    onnx_path = tmp_path / "model.onnx"
    onnx_export.export(model, torch.randn(1, 3, 32, 32), onnx_path)
    out = tmp_path / "compiled"
    out.mkdir()
    facts = target.compile(onnx_path, out, "fp32")
    assert facts["precision"] == "fp32" and all((out / f).is_file() for f in target.files)
    batch = torch.randn(4, 3, 32, 32)
    session = target.open(out, tuple(batch.shape), threads=1)
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(session.run(batch.numpy()), expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("target_name", TARGETS.names())
def test_unsupported_precision_is_a_clear_error(target_name, tmp_path):
    target = _available(target_name)
    with pytest.raises(ConfigError, match="not supported"):
        target.compile(tmp_path / "missing.onnx", tmp_path, "int4")


@pytest.mark.parametrize("target_name", TARGETS.names())
def test_block_is_a_power_of_two_channel_multiple(target_name):
    block = TARGETS.load(target_name)().block("fp32") if TARGETS.unavailable_reason(target_name) is None else 8
    assert block in (4, 8, 16, 32)


def test_cpu_target_keeps_weights_past_the_flatbuffer_limit_beside_the_graph(tmp_path, monkeypatch):
    from exporters import cpu

    target = _available("cpu")
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # every model counts as one past 2 GB
    torch.manual_seed(0)
    model = build_model(TINY_SPECS["resnet"]).eval()
    onnx_export.export(model, torch.randn(1, 3, 32, 32), tmp_path / "model.onnx")
    out = tmp_path / "compiled"
    out.mkdir()
    target.compile(tmp_path / "model.onnx", out, "fp32")
    assert sorted(p.name for p in out.iterdir()) == [cpu.BIG_MODEL_FILE, f"{cpu.BIG_MODEL_FILE}.data"]
    batch = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(target.open(out, (2, 3, 32, 32), threads=1).run(batch.numpy()), expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("target_name", ["cpu", "openvino"])
def test_the_runtimes_profiler_times_each_layer_of_a_real_session(target_name, tmp_path):
    import time

    target = _available(target_name)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10),
    ).eval()  # fmt: skip
    onnx_export.export(model, torch.randn(1, 3, 32, 32), tmp_path / "model.onnx")
    (tmp_path / "compiled").mkdir()
    target.compile(tmp_path / "model.onnx", tmp_path / "compiled", "fp32")
    times = target.layer_times(tmp_path / "compiled", (2, 3, 32, 32), threads=1, runs=10)
    convs = {name: t for name, t in times.items() if "conv" in t["op"].lower()}
    assert len(convs) == 2 and all(t["ms"] > 0 for t in times.values())
    # the wider conv does 21x the work (64*16*9 against 16*3*9 MACs per pixel), so it takes longer
    narrow, wide = sorted(convs.values(), key=lambda t: t["ms"])
    assert wide["ms"] > 2 * narrow["ms"]
    if target_name == "cpu":  # each fused node's weight shape, to match it to its layer
        assert [narrow["input_shapes"][1], wide["input_shapes"][1]] == [[16, 3, 3, 3], [64, 16, 3, 3]]
    session = target.open(tmp_path / "compiled", (2, 3, 32, 32), threads=1)
    feed = np.zeros((2, 3, 32, 32), np.float32)
    session.run(feed)
    started = time.perf_counter()
    for _ in range(10):
        session.run(feed)
    # per-layer times add up to no more than a call takes (plus slack for a noisy machine)
    assert sum(t["ms"] for t in times.values()) < 3 * (time.perf_counter() - started) / 10 * 1000


def test_onnx_runtime_trace_parsing_keeps_the_median_of_the_last_calls():
    import json

    from exporters.cpu import node_times

    shapes = [{"float": [1, 3, 8, 8]}, {"float": [16, 3, 3, 3]}]
    events = [
        {"cat": "Session", "name": "model_run", "dur": 900},
        *[
            {"cat": "Node", "name": "conv_kernel_time", "dur": d, "args": {"op_name": "Conv", "input_type_shape": shapes}}
            for d in (500, 100, 300, 1100)
        ],
        {"cat": "Node", "name": "conv_fence_before", "dur": 1},
    ]
    # the warm-up call (500 us) left out; the median of the rest, not their mean (0.5 ms)
    expected = {"conv": {"op": "Conv", "ms": pytest.approx(0.3), "input_shapes": [[1, 3, 8, 8], [16, 3, 3, 3]]}}
    assert node_times(json.dumps(events), runs=3) == expected
