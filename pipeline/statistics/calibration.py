"""Statistics collected on calibration data, by need. A scorer declares the needs it reads
(`needs = ("input_moments",)`); calibration runs only the collectors asked for.

Every statistic is taken at the inputs of the layers that consume a unit group (conv or linear
inputs), which is the unit's post-activation value: the point the papers' criteria and mean-shift
compensation are defined at. Keys in the stats file are "<need>/<module>/<statistic>"."""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.core.device import float64_device, to_cpu, to_float64
from pipeline.data.loaders import SYNTHETIC_LABEL

BACKWARD_BYTES = 1 << 30  # what one calibration backward pass may hold for autograd


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(observations, channels): every sample and spatial position (or token) is an observation."""
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """(samples, channels): spatial positions or tokens averaged per sample."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.mean(dim=1)
    return x


class InputMoments:
    """Per-channel mean and variance (Welford/Chan merge, float64) of each consumer's input."""

    name = "input_moments"
    needs_grad = False
    CHUNK_ELEMENTS = 1 << 24  # float64 copies of at most 128 MB at a time: a 600-pixel layer's input is gigabytes

    def __init__(self, modules: list[str]):
        self.count: dict[str, float] = {}
        self.mean: dict[str, torch.Tensor] = {}
        self.m2: dict[str, torch.Tensor] = {}

    def on_input(self, module: str, x: torch.Tensor, labels: torch.Tensor) -> None:
        rows = max(1, self.CHUNK_ELEMENTS // max(x[:1].numel(), 1))
        for part in x.detach().split(rows):
            self._merge(module, to_float64(_channels_last(part)))

    def _merge(self, module: str, obs: torch.Tensor) -> None:
        n_b = obs.shape[0]
        mean_b = obs.mean(0)
        m2_b = ((obs - mean_b) ** 2).sum(0)
        if module not in self.count:
            self.count[module], self.mean[module], self.m2[module] = float(n_b), mean_b, m2_b
            return
        n_a = self.count[module]
        delta = mean_b - self.mean[module]
        total = n_a + n_b
        self.mean[module] = self.mean[module] + delta * (n_b / total)
        self.m2[module] = self.m2[module] + m2_b + delta**2 * (n_a * n_b / total)
        self.count[module] = total

    def on_input_grad(self, module, x, grad) -> None:
        pass

    def result(self) -> dict[str, torch.Tensor]:
        out = {}
        for module, count in self.count.items():
            out[f"{self.name}/{module}/mean"] = self.mean[module]
            out[f"{self.name}/{module}/var"] = self.m2[module] / count  # population variance
            out[f"{self.name}/{module}/count"] = torch.tensor([count], dtype=torch.float64)
        return out


class ClassMoments:
    """Per-class mean and variance of each channel's spatially pooled input (float64)."""

    name = "class_moments"
    needs_grad = False

    def __init__(self, modules: list[str]):
        self.sums: dict[str, dict[int, list[torch.Tensor]]] = {}

    def on_input(self, module: str, x: torch.Tensor, labels: torch.Tensor) -> None:
        pooled = to_float64(_pooled(x.detach()))
        labels = labels.to(pooled.device)
        per_class = self.sums.setdefault(module, {})
        for label in labels.unique().tolist():
            rows = pooled[labels == label]
            acc = per_class.setdefault(
                int(label), [torch.zeros((), device=rows.device), torch.zeros_like(rows[0]), torch.zeros_like(rows[0])]
            )
            acc[0] = acc[0] + rows.shape[0]
            acc[1] = acc[1] + rows.sum(0)
            acc[2] = acc[2] + (rows**2).sum(0)

    def on_input_grad(self, module, x, grad) -> None:
        pass

    def result(self) -> dict[str, torch.Tensor]:
        out = {}
        for module, per_class in self.sums.items():
            labels = sorted(per_class)
            counts = torch.stack([per_class[c][0] for c in labels]).double()
            means = torch.stack([per_class[c][1] for c in labels]) / counts[:, None]
            squares = torch.stack([per_class[c][2] for c in labels]) / counts[:, None]
            out[f"{self.name}/{module}/labels"] = torch.tensor(labels, dtype=torch.int64)
            out[f"{self.name}/{module}/count"] = counts
            out[f"{self.name}/{module}/mean"] = means
            out[f"{self.name}/{module}/var"] = (squares - means**2).clamp_min(0.0)
        return out


class InputGateGradients:
    """Per input channel, the sum over samples and positions of activation x dLoss/dactivation:
    the gradient of the loss with respect to a multiplicative gate at 1 on that channel."""

    name = "input_grads"
    needs_grad = True

    def __init__(self, modules: list[str]):
        self.gate: dict[str, torch.Tensor] = {}
        self.gate_abs: dict[str, torch.Tensor] = {}

    def on_input(self, module, x, labels) -> None:
        pass

    def on_input_grad(self, module: str, x: torch.Tensor, grad: torch.Tensor) -> None:
        product = to_float64(x.detach() * grad)
        per_sample = product.sum(dim=(2, 3)) if product.dim() == 4 else (product.sum(1) if product.dim() == 3 else product)
        self.gate[module] = self.gate.get(module, 0) + per_sample.sum(0)
        self.gate_abs[module] = self.gate_abs.get(module, 0) + per_sample.abs().sum(0)

    def result(self) -> dict[str, torch.Tensor]:
        out = {}
        for module in self.gate:
            out[f"{self.name}/{module}/gate"] = self.gate[module]
            out[f"{self.name}/{module}/gate_abs"] = self.gate_abs[module]
        return out


class ClassTaylor:
    """Per-class first-order Taylor importance |a * dL/da| of each input channel (Class-Aware Pruning):
    the class mean of each sample's position-averaged importance, and, where it fits in memory, how
    often each position of each channel matters (importance > 1e-50) for each class."""

    name = "class_taylor"
    needs_grad = True
    MAX_CELLS = 20_000_000  # classes x channels x positions kept per layer for the per-position counts
    EPSILON = 1e-50

    def __init__(self, modules: list[str]):
        self.labels: dict[str, torch.Tensor] = {}
        self.sums: dict[str, dict[int, torch.Tensor]] = {}
        self.counts: dict[str, dict[int, int]] = {}
        self.firing: dict[str, dict[int, torch.Tensor] | None] = {}

    def on_input(self, module: str, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.labels[module] = labels

    def on_input_grad(self, module: str, x: torch.Tensor, grad: torch.Tensor) -> None:
        importance = to_float64((x.detach() * grad).abs())
        if importance.dim() == 2:
            importance = importance[:, :, None]
        elif importance.dim() == 3:  # tokens: (batch, tokens, channels) -> (batch, channels, tokens)
            importance = importance.transpose(1, 2)
        importance = importance.reshape(importance.shape[0], importance.shape[1], -1)
        labels = self.labels[module].to(importance.device)
        sums, counts = self.sums.setdefault(module, {}), self.counts.setdefault(module, {})
        if module not in self.firing:
            self.firing[module] = {}
        for label in labels.unique().tolist():
            rows = importance[labels == label]
            sums[label] = sums.get(label, 0) + rows.mean(2).sum(0)
            counts[label] = counts.get(label, 0) + rows.shape[0]
            firing = self.firing[module]
            if firing is not None:
                if (len(firing) + 1) * rows.shape[1] * rows.shape[2] > self.MAX_CELLS:
                    self.firing[module] = None  # too large: scorers fall back to the class means
                else:
                    firing[label] = firing.get(label, 0) + (rows > self.EPSILON).double().sum(0)

    def result(self) -> dict[str, torch.Tensor]:
        out = {}
        for module, sums in self.sums.items():
            labels = sorted(sums)
            device = sums[labels[0]].device
            counts = torch.tensor([self.counts[module][c] for c in labels], dtype=torch.float64, device=device)
            out[f"{self.name}/{module}/labels"] = torch.tensor(labels, dtype=torch.int64)
            out[f"{self.name}/{module}/count"] = counts
            out[f"{self.name}/{module}/mean"] = torch.stack([sums[c] for c in labels]) / counts[:, None]
            firing = self.firing.get(module)
            if firing is not None and len(firing) == len(labels):
                out[f"{self.name}/{module}/firing"] = torch.stack([firing[c] for c in labels]) / counts[:, None, None]
        return out


COLLECTORS = {c.name: c for c in (InputMoments, ClassMoments, InputGateGradients, ClassTaylor)}
WEIGHT_GRADS = "weight_grads"  # mean gradient of every parameter, collected by `collect` itself
ALL_NEEDS = (*COLLECTORS, WEIGHT_GRADS)


def collect(model: nn.Module, batches, consumers: list[str], needs: tuple[str, ...], progress=None) -> dict[str, torch.Tensor]:
    """Run the calibration batches through `model` with the collectors of `needs`; the loss of the
    backward pass is cross-entropy on the labels (or the model's own predictions without labels).
    The batches are on the model's device; the statistics come back on the CPU, as they are saved."""
    unknown = set(needs) - set(ALL_NEEDS)
    if unknown:
        raise ValueError(f"unknown calibration needs: {sorted(unknown)}")
    collectors = [COLLECTORS[n](consumers) for n in needs if n in COLLECTORS]
    input_grads = any(c.needs_grad for c in collectors)
    backward = WEIGHT_GRADS in needs or input_grads
    model.eval()
    current_labels: list[torch.Tensor] = []
    active = [False]  # hooks stay silent during the forward pass that makes pseudo-labels
    handles = []

    def make_hook(name):
        def hook(module, inputs):
            if not active[0]:
                return
            x = inputs[0]
            for collector in collectors:
                collector.on_input(name, x, current_labels[0])
            if input_grads and x.requires_grad:

                def on_grad(grad, x=x):
                    for collector in collectors:
                        collector.on_input_grad(name, x, grad)

                x.register_hook(on_grad)

        return hook

    for name in consumers:
        handles.append(model.get_submodule(name).register_forward_pre_hook(make_hook(name)))
    grads = (
        {n: torch.zeros_like(p, dtype=torch.float64, device=float64_device(p.device)) for n, p in model.named_parameters()}
        if WEIGHT_GRADS in needs
        else {}
    )
    batches_seen, chunk = 0, None
    try:
        for inputs, labels in batches:
            with torch.no_grad():
                labels = _labels_or_predictions(model, inputs, labels.to(inputs.device))
            current_labels[:] = [labels]
            if backward:
                chunk = chunk or backward_chunk(model, inputs)
                _backward_in_chunks(model, inputs, labels, chunk, active, current_labels)
                for n, p in model.named_parameters():
                    if n in grads and p.grad is not None:
                        grads[n] += to_float64(p.grad)
            else:
                with torch.no_grad():
                    active[0] = True
                    model(inputs)
                    active[0] = False
            batches_seen += 1
            if progress is not None:
                progress(inputs.shape[0])
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    stats: dict[str, torch.Tensor] = {}
    for collector in collectors:
        stats.update(collector.result())
    for n, g in grads.items():
        stats[f"{WEIGHT_GRADS}/{n}"] = g / max(batches_seen, 1)
    return to_cpu(stats)


def backward_chunk(model: nn.Module, inputs: torch.Tensor) -> int:
    """Images per backward pass: as many as keep what autograd saves for the backward pass within
    BACKWARD_BYTES (measured on one image). A 600-pixel EfficientNet saves gigabytes per image; a
    CIFAR ResNet a few megabytes, so its batches stay whole."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs[:1].detach().clone().requires_grad_(True))
    return max(1, int(BACKWARD_BYTES // max(sum(saved.values()), 1)))


def _backward_in_chunks(model, inputs, labels, chunk, active, current_labels) -> None:
    """The gradients of the batch's mean cross-entropy, accumulated over chunks of `chunk` images
    (each chunk's loss weighted by its share of the batch, so every gradient equals the whole batch's)."""
    model.zero_grad(set_to_none=True)
    for part, part_labels in zip(inputs.split(chunk), labels.split(chunk)):
        current_labels[:] = [part_labels]
        active[0] = True
        loss = nn.functional.cross_entropy(model(part.clone().requires_grad_(True)), part_labels)
        active[0] = False
        (loss * (part.shape[0] / inputs.shape[0])).backward()


def _labels_or_predictions(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if (labels == SYNTHETIC_LABEL).any():
        return model(inputs.detach()).argmax(1)
    return labels
