"""Attention heads: which modules are multi-head attention with a fused qkv projection, how the
dependency graph sees them (one opaque node), and how whole heads are removed from them.

A module qualifies when it has `qkv` and `proj` Linear layers and an int `num_heads`, with qkv's
rows laid out [q | k | v] x heads x head_dim (ours, timm's Attention, windowed attention). Head
removal slices those rows and proj's columns and lowers `num_heads` (and `attn_dim` where the
module keeps one), which is what the module's own forward reads. Whether that is exact for a
given module (extra per-head tensors, another row layout) is checked by trial removal in
pipeline.pruning.validation, never assumed."""

from __future__ import annotations

import torch
import torch.nn as nn


def is_head_attention(module: nn.Module) -> bool:
    qkv, proj, heads = getattr(module, "qkv", None), getattr(module, "proj", None), getattr(module, "num_heads", None)
    return (
        isinstance(qkv, nn.Linear)
        and isinstance(proj, nn.Linear)
        and isinstance(heads, int)
        and heads >= 1
        and qkv.out_features == 3 * proj.in_features
        and proj.in_features % heads == 0
    )


def head_dim(attention: nn.Module) -> int:
    return attention.proj.in_features // attention.num_heads


def keep_index(size: int, removed) -> torch.Tensor:
    removed = {int(i) for i in removed}
    return torch.tensor([i for i in range(size) if i not in removed], dtype=torch.long)


def slice_linear(layer: nn.Linear, out_keep: torch.Tensor | None = None, in_keep: torch.Tensor | None = None) -> None:
    weight = layer.weight.data
    out_keep = out_keep.to(weight.device) if out_keep is not None else None  # index on the weights' device
    in_keep = in_keep.to(weight.device) if in_keep is not None else None
    if out_keep is not None:
        weight = weight[out_keep]
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[out_keep].clone())
        layer.out_features = len(out_keep)
    if in_keep is not None:
        weight = weight[:, in_keep]
        layer.in_features = len(in_keep)
    layer.weight = nn.Parameter(weight.clone())


def boundary_pruner():
    """A Torch-Pruning pruner that makes an attention module one node whose in/out width is the
    residual width; its heads are removed by `remove_heads`, never by the dependency graph."""
    import torch_pruning as tp

    class AttentionBoundary(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            slice_linear(layer.proj, out_keep=keep_index(layer.proj.out_features, idxs))
            return layer

        def prune_in_channels(self, layer, idxs):
            slice_linear(layer.qkv, in_keep=keep_index(layer.qkv.in_features, idxs))
            return layer

        def get_out_channels(self, layer):
            return layer.proj.out_features

        def get_in_channels(self, layer):
            return layer.qkv.in_features

    return AttentionBoundary()


def head_rows(attention: nn.Module, heads: list[int]) -> list[int]:
    """qkv rows of the listed heads, [q | k | v] sections in order."""
    dim, inner = head_dim(attention), attention.proj.in_features
    return [s * inner + h * dim + d for s in range(3) for h in heads for d in range(dim)]


def head_columns(attention: nn.Module, heads: list[int]) -> list[int]:
    dim = head_dim(attention)
    return [h * dim + d for h in heads for d in range(dim)]


def remove_heads(attention: nn.Module, heads: list[int]) -> None:
    keep = [h for h in range(attention.num_heads) if h not in set(heads)]
    slice_linear(attention.qkv, out_keep=torch.tensor(head_rows(attention, keep)))
    slice_linear(attention.proj, in_keep=torch.tensor(head_columns(attention, keep)))
    attention.num_heads = len(keep)
    if isinstance(getattr(attention, "attn_dim", None), int):  # timm keeps the inner width too
        attention.attn_dim = attention.proj.in_features
