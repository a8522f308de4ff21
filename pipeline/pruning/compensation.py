"""What removed units leave behind, put back into the layers that consumed them.

- mean: mean-shift compensation (VBP, Berisha et al. 2025). A removed unit is replaced by its mean
  activation on the calibration data, which a consumer turns into a constant it adds to its bias:
  b' = b + W[:, P] mu_P (linear), b'[o] = b[o] + sum_k mu_k sum_rs W[o, k, r, s] (conv). Exact when
  the removed activations are constant; for convs, away from zero-padded borders.
- lstsq: beyond the papers. Every conv and linear layer from the first consumer of a pruned group on
  (the classifier included) is re-fitted by ridge least squares so that, on calibration data, it
  reproduces the dense model's output of that layer from the inputs the already-pruned earlier layers
  give it (layers in forward order; the Gram matrix accumulated over batches, on ROWS_PER_BATCH sampled
  rows of each). Re-fitting the layers past the consumers too corrects the error that travels along a
  residual stream: on ResNet-56 at 2x fewer MACs, 0.777 one-shot against 0.745 with the consumers alone.
  A layer that feeds a residual join (pipeline.pruning.residual) is fitted to the dense join instead
  of its own dense output, so it also cancels the error of the join's other branch: 0.789. A layer
  whose output goes into a ReLU (through BatchNorm, maybe a join) need not match the dense values the
  ReLU zeroes, only stay below the ReLU's threshold there (fit_layer): on ResNet-20 at 2x, 0.726
  against 0.706."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.device import rows_that_fit, to_float64
from pipeline.pruning.residual import Joins
from pipeline.pruning.surgery import UnitGroup, execution_order

METHODS = ("none", "mean", "lstsq")


def output_count(layer: nn.Module) -> int:
    """A conv's output channels or a linear layer's output features."""
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def add_bias(module: nn.Module) -> bool:
    """Give a conv or linear layer a zero bias; returns whether one was added."""
    if module.bias is not None:
        return False
    module.bias = nn.Parameter(torch.zeros(output_count(module), dtype=module.weight.dtype, device=module.weight.device))
    return True


@torch.no_grad()
def fold_means(
    model: nn.Module, groups: list[UnitGroup], removal: dict[str, list[int]], stats: dict[str, torch.Tensor]
) -> list[str]:
    """Fold the removed units' mean activations into their consumers' biases, on the model *before*
    removal (so the units' weights are still there). Returns the layers that got a new bias. `stats`
    may be on the CPU whatever the model's device."""
    added = []
    for group in groups:
        removed = set(removal.get(group.name, []))
        if not removed:
            continue
        for consumer in group.consumers:
            if consumer.depthwise:
                continue  # removed together with the group
            channels = consumer.channels_of(removed)
            layer = model.get_submodule(consumer.module)
            means = stats[f"input_moments/{consumer.module}/mean"][channels].to(layer.weight.device, layer.weight.dtype)
            weight = layer.weight[:, channels]
            if weight.dim() == 4:
                weight = weight.sum(dim=(2, 3))
            if add_bias(layer):
                added.append(consumer.module)
            layer.bias += weight @ means
    return added


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def _captured(model: nn.Module, module: nn.Module, want: str, batch: torch.Tensor) -> torch.Tensor:
    """`module`'s input ("input") or output ("output") when `model` runs on `batch`; the forward
    stops there."""
    store = {}

    def pre_hook(mod, inputs):
        store["value"] = inputs[0].detach()
        raise _Stop

    def post_hook(mod, inputs, output):
        store["value"] = output.detach()
        raise _Stop

    handle = module.register_forward_pre_hook(pre_hook) if want == "input" else module.register_forward_hook(post_hook)
    try:
        model(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    return store["value"]


def _as_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input as rows of the layer's receptive fields (im2col for convs)."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _output_rows(y: torch.Tensor) -> torch.Tensor:
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]) if y.dim() == 4 else y.reshape(-1, y.shape[-1])


def _kept_outputs(groups: list[UnitGroup], removal: dict[str, list[int]], module: str, size: int) -> list[int]:
    removed = set()
    for group in groups:
        units = set(removal.get(group.name, []))
        for piece in group.params:
            if piece.module == module and piece.param == "weight" and piece.dim == 0:
                removed |= {p for p, u in zip(piece.positions, piece.units) if u in units}
    return [o for o in range(size) if o not in removed]


ROWS_PER_BATCH = 16384  # rows (receptive fields) sampled per batch and layer: plenty for a few hundred unknowns
CACHE_BYTES = 4 << 30  # dense layer outputs kept in host memory for the re-fit; beyond it they are recomputed


def _dense_outputs(dense: nn.Module, names: list[str], batches: list, kept: dict[str, list[int]]) -> dict | None:
    """Every re-fitted layer's dense output (kept channels), per batch, from one pass; None when
    that would take more than CACHE_BYTES (on CUDA: more than the free device memory allows)."""
    sizes = {}
    handles = [
        dense.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: sizes.__setitem__(n, o[0].numel() * len(kept[n]) // o.shape[1 if o.dim() == 4 else -1])
        )
        for n in names
    ]
    try:
        dense(batches[0][0][:1])
    finally:
        for handle in handles:
            handle.remove()
    # at most ROWS_PER_BATCH rows of each batch are kept (sampled_rows)
    elements = sum(min(size * b[0].shape[0], ROWS_PER_BATCH * len(kept[n])) for b in batches for n, size in sizes.items())
    batch_bytes = max(elements // max(len(batches), 1), 1) * 4
    if elements and len(batches) > rows_that_fit(batches[0][0].device, batch_bytes, CACHE_BYTES // batch_bytes):
        return None
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    current = [0]

    def keep(name, output):
        rows = _output_rows(output.detach())
        outputs[name].append(rows[sampled_rows(rows.shape[0], current[0], rows.device)][:, kept[name]].float())

    handles = [dense.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: keep(n, o)) for n in names]
    try:
        for index, (inputs, _) in enumerate(batches):
            current[0] = index
            dense(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def refit_order(pruned: nn.Module, groups: list[UnitGroup], removal: dict[str, list[int]], example: torch.Tensor) -> list[str]:
    """The layers the re-fit solves, in forward order (refitted_from)."""
    return refitted_from(pruned, [g for g in groups if removal.get(g.name)], execution_order(pruned, example))


def refitted_from(model: nn.Module, pruned: list[UnitGroup], order: list[str]) -> list[str]:
    """Every layer of `order` from the first consumer of a `pruned` group on, except grouped and
    depthwise convs (their inputs are not shared across outputs)."""
    consumers = {c.module for g in pruned for c in g.consumers if not c.depthwise}
    first = next((i for i, name in enumerate(order) if name in consumers), len(order))
    return refittable_layers(model, order[first:])


def refittable_layers(model: nn.Module, names: list[str]) -> list[str]:
    """The layers among `names` a re-fit solves: not grouped or depthwise convs, which pass their
    channels through."""
    return [n for n in names if not (isinstance(model.get_submodule(n), nn.Conv2d) and model.get_submodule(n).groups != 1)]


def sampled_rows(count: int, batch_index: int, device) -> torch.Tensor | slice:
    """ROWS_PER_BATCH of a batch's `count` rows, the same ones for a layer's inputs and outputs."""
    if count <= ROWS_PER_BATCH:
        return slice(None)
    generator = torch.Generator().manual_seed(batch_index)
    return torch.randperm(count, generator=generator)[:ROWS_PER_BATCH].sort().values.to(device)


def normal_equations(
    dense: nn.Module,
    model: nn.Module,
    name: str,
    inputs: list,
    cached: list | None = None,
    outputs: list[int] | None = None,
    joins: Joins | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `name`'s least-squares system (X^T X, X^T Y) in float64 on sampled rows: X its input in
    `model` (a ones column where it has a bias), Y the dense model's output of that layer (channels
    `outputs`, all when None), taken from `cached` (sampled rows per batch) where given; where the
    layer feeds one of `joins`, Y also makes up for the error of the join's other branch."""
    gram = cross = None
    for rows, targets, _ in _batch_systems(dense, model, name, inputs, cached, outputs, joins, gate=False):
        gram = rows.T @ rows if gram is None else gram + rows.T @ rows
        cross = rows.T @ targets if cross is None else cross + rows.T @ targets
    return gram, cross


def _batch_systems(dense, model, name: str, inputs: list, cached, outputs, joins: Joins | None, gate: bool):
    """Per batch: (X rows, Y rows, the ReLU gate (theta, sign) or None) of layer `name`'s fit."""
    layer, reference = model.get_submodule(name), dense.get_submodule(name)
    for index, batch in enumerate(inputs):
        correction = residual = None
        x = None
        if joins is not None and joins.covers(name, batch):
            x, correction, residual = joins.capture(name, batch, index, outputs)
        elif joins is not None and joins.model is model:
            x = joins.layer_input(name, batch, index)
        if x is None:
            x = _captured(model, layer, "input", batch)
        rows = _as_rows(layer, x)
        pick = sampled_rows(rows.shape[0], index, rows.device)
        if cached is not None:
            targets = to_float64(cached[index])
        else:
            targets = _output_rows(_captured(dense, reference, "output", batch))[pick]
            targets = to_float64(targets if outputs is None else targets[:, outputs])
        if correction is not None:
            targets = targets + to_float64(correction)
        rows = to_float64(rows[pick])
        if layer.bias is not None:
            rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype, device=rows.device)], 1)
        threshold = None
        if gate and joins is not None and joins.gates(name, batch):
            threshold = joins.threshold(name, rows.shape[0], outputs, residual)
        yield rows, targets, threshold


GATE_STEPS = 8  # majorize-minimize steps of the ReLU-aware fit, not converged: ResNet-20 2x 0.726, 16 steps 0.728
GATE_BYTES = 2 << 30  # the rows a ReLU-aware fit keeps between its steps; beyond it the fit is plain


def fit_layer(dense, model, name: str, inputs: list, ridge: float, cached=None, outputs=None, joins=None) -> torch.Tensor:
    """Layer `name`'s ridge least-squares weights (one column per output, the bias last). Where its
    output goes into a ReLU (through BatchNorm, maybe a residual join), a negative dense ReLU input is
    matched by any value at or below the ReLU's threshold: the fit minimises
    sum over active entries (z - y)^2 + sum over inactive ones max(z - theta, 0)^2 (convex), by
    majorize-minimize steps that move each inactive target to min(z, theta); the Gram matrix is the
    plain fit's, so each step is one product and one solve."""
    gram = cross = None
    kept, size = [], 0
    for rows, targets, gate in _batch_systems(dense, model, name, inputs, cached, outputs, joins, gate=True):
        gram = rows.T @ rows if gram is None else gram + rows.T @ rows
        cross = rows.T @ targets if cross is None else cross + rows.T @ targets
        size += (rows.numel() + 3 * targets.numel()) * 4
        if kept is not None:  # the steps run in float32: the Gram matrix, factored once, stays float64
            kept = None if gate is None or size > GATE_BYTES else [*kept, tuple(t.float() for t in (rows, targets, *gate))]
    damping = ridge * diagonal_mean(gram)
    factor = torch.linalg.cholesky(gram + damping * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))
    solution = torch.cholesky_solve(cross, factor)
    for _ in range(GATE_STEPS if kept else 0):
        moved = torch.zeros_like(cross)
        weights = solution.float()
        for rows, targets, theta, sign in kept:
            z = rows @ weights
            inactive = (sign * (targets - theta) <= 0) & (sign != 0)
            moved += (rows.T @ torch.where(inactive, theta + sign * torch.clamp(sign * (z - theta), max=0), targets)).double()
        solution = torch.cholesky_solve(moved, factor)
    return solution


def diagonal_mean(gram: torch.Tensor) -> torch.Tensor:
    """The mean of the Gram diagonal over the columns that are not all zero: the ridge's scale is then
    the same whether a switched-off input is still there (zeros) or removed."""
    diagonal = gram.diagonal()
    live = diagonal[diagonal > 0]
    return live.mean() if live.numel() else diagonal.mean()


def write_into(layer: nn.Module, solution: torch.Tensor, rows: list[int] | None = None) -> None:
    """Weights (one column per output, the bias last) written into a layer: all of its outputs, or
    the output channels `rows` (the others left as they are)."""
    solution = solution.T
    index = slice(None) if rows is None else torch.tensor(rows, device=layer.weight.device)
    if layer.bias is not None:
        layer.bias[index] = solution[:, -1].to(layer.bias.dtype)
        solution = solution[:, :-1]
    layer.weight[index] = solution.reshape(-1, *layer.weight.shape[1:]).to(layer.weight.dtype)


@torch.no_grad()
def refit_least_squares(
    dense: nn.Module,
    pruned: nn.Module,
    groups: list[UnitGroup],
    removal: dict[str, list[int]],
    batches,
    example: torch.Tensor,
    ridge: float = 1e-3,
    progress=None,
) -> list[str]:
    """Re-fit every consumer of a pruned group, in forward order; returns the layers re-fitted."""
    order = refit_order(pruned, groups, removal, example)
    batches = list(batches)
    dense.eval(), pruned.eval()
    kept = {}
    for name in order:
        kept[name] = _kept_outputs(groups, removal, name, output_count(dense.get_submodule(name)))
    cached = _dense_outputs(dense, order, batches, kept)
    joins = Joins(dense, pruned)
    for name in order:
        layer = pruned.get_submodule(name)
        inputs = [b[0] for b in batches]
        solution = fit_layer(dense, pruned, name, inputs, ridge, None if cached is None else cached[name], kept[name], joins)
        write_into(layer, solution)
        if progress is not None:
            progress(1)
    return order
