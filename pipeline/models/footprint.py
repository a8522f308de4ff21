"""What a model will need in memory, known before it is built for real: the bytes of its weights and
of one image's activations (every leaf module's output in a forward pass). Measured on the meta
device, which allocates nothing and computes nothing; a constructor that reads tensor values cannot
build there and is built for real, its activations then left unmeasured."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Footprint:
    weight_bytes: int
    activation_bytes: int | None  # one image; None where the model could not run on the meta device


def footprint(spec_text: str, model_args: dict | None, image_shape: tuple[int, ...]) -> Footprint | None:
    """None where the model does not build at all (the model stage then says why)."""
    from pipeline.models.build import family_of
    from pipeline.models.specs import parse_spec

    spec, family, args = parse_spec(spec_text), family_of(spec_text), dict(model_args or {})
    try:
        with torch.device("meta"):
            model = family.build(spec.name, None, args)
    except Exception:  # reads tensor values while it builds: count a real build's weights
        try:
            model = family.build(spec.name, None, args)
        except Exception:
            return None
        return Footprint(_bytes(model), None)
    return Footprint(_bytes(model), _activation_bytes(model, image_shape))


def _bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _activation_bytes(model: torch.nn.Module, image_shape: tuple[int, ...]) -> int | None:
    total = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *image_shape), device="meta"))
    except Exception:  # an op without a meta kernel, data-dependent control flow
        return None
    finally:
        for handle in handles:
            handle.remove()
    return total[0]
