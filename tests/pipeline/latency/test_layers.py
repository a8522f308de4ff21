import numpy as np
import onnxruntime as ort
import torch

from pipeline.latency.layers import LayerShape, measurable_layers, onnx_graph
from pipeline.pruning.analysis import analyse
from tests.tiny_models import tiny_mobile


def test_the_layers_pruning_resizes_with_the_widths_they_are_measured_at():
    model, example = tiny_mobile().eval(), torch.randn(4, 3, 32, 32)
    layers = measurable_layers(model, example, analyse(model, example[:1], ()).groups, 8, 0.9)
    assert set(layers) == {"expand.0", "depthwise.0", "project.0", "head.0", "fc"}
    depthwise = layers["depthwise.0"]
    assert depthwise.shape.depthwise and depthwise.in_grid == [48]  # its input width is its output width
    assert depthwise.out_grid == [8, 16, 24, 32, 40, 48]  # every block step from the fewest allowed (10% of 48) to all
    assert layers["project.0"].in_grid == [8, 16, 24, 32, 40, 48] and layers["project.0"].out_grid == [16]
    assert layers["expand.0"].shape.input_shape == (4, 16, 16, 16)  # at the run's batch


def test_a_layer_is_built_alone_at_any_width_and_runs():
    for shape, width in ((LayerShape("conv", 48, 16, (2, 48, 8, 8), (3, 3), (2, 2), (1, 1)), 24),
                         (LayerShape("conv", 48, 48, (2, 48, 8, 8), (3, 3), (1, 1), (1, 1), depthwise=True), 24),
                         (LayerShape("linear", 48, 10, (2, 5, 48)), 24)):  # fmt: skip
        graph = onnx_graph(shape, width, width if shape.depthwise else shape.out_width)
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = np.ones([d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim], np.float32)
        out = session.run(None, {"input": feed})[0]
        expected = {"conv": (2, 16, 4, 4), "linear": (2, 5, 10)}[shape.kind] if not shape.depthwise else (2, 24, 8, 8)
        assert out.shape == expected
