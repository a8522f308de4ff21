import torch

from pipeline.models.build import build_model
from pipeline.models.footprint import footprint
from tests.tiny_models import TINY_SPECS


def test_weights_and_one_images_activations_are_counted_without_allocating_them():
    model = build_model(TINY_SPECS["resnet"]).eval()
    outputs = []
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    for leaf in leaves:
        leaf.register_forward_hook(lambda module, args, out: outputs.append(out.numel() * 4))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    found = footprint(TINY_SPECS["resnet"], None, (3, 32, 32))
    assert found.weight_bytes == sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert found.activation_bytes == sum(outputs) > 0
    assert 3.5 * sum(outputs) < footprint(TINY_SPECS["resnet"], None, (3, 64, 64)).activation_bytes < 4 * sum(outputs)


def test_a_constructor_that_reads_tensor_values_is_built_for_real(tmp_path):
    source = tmp_path / "reads_values.py"
    source.write_text(
        "import torch\n\ndef make():\n    width = int(torch.ones(3).sum().item())  # no value on the meta device\n"
        "    return torch.nn.Linear(width, 2)\n"
    )
    found = footprint(f"{source}:make", None, (3,))
    assert found.weight_bytes == (3 * 2 + 2) * 4 and found.activation_bytes is None
