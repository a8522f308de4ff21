"""Multi-head self-attention with separate qkv and output projections and a `num_heads` attribute.

torch.nn.MultiheadAttention packs its projections and ties its inner width to the residual width,
so whole heads cannot be removed from it. `convert_attention` swaps each one for this numerically
identical module, whose heads the surgery can remove and whose ONNX graph is plain MatMul/Softmax."""

from __future__ import annotations

import torch
import torch.nn as nn


class HeadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, head_dim: int | None = None, bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(embed_dim, 3 * inner, bias=bias)
        self.proj = nn.Linear(inner, embed_dim, bias=bias)

    def forward(self, query, key=None, value=None, need_weights=False, **unused):
        # Called as nn.MultiheadAttention is in torchvision's ViT: self-attention, (q, q, q).
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise NotImplementedError("HeadAttention supports self-attention only")
        batch, tokens, _ = query.shape
        qkv = self.qkv(query).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(out), None


def from_multihead(mha: nn.MultiheadAttention) -> HeadAttention:
    has_bias = mha.in_proj_bias is not None
    converted = HeadAttention(mha.embed_dim, mha.num_heads, bias=has_bias)
    with torch.no_grad():
        converted.qkv.weight.copy_(mha.in_proj_weight)
        converted.proj.weight.copy_(mha.out_proj.weight)
        if has_bias:
            converted.qkv.bias.copy_(mha.in_proj_bias)
            converted.proj.bias.copy_(mha.out_proj.bias)
    return converted


def convert_attention(model: nn.Module) -> int:
    """Replace every batch-first self-attention nn.MultiheadAttention in place; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention) and child.batch_first and child._qkv_same_embed_dim:
                setattr(parent, child_name, from_multihead(child))
                count += 1
    return count
